"""The figures. Each starts what it measures as processes of their own (the control plane or
the baseline server, then load workers), measures, stops everything by pid, and returns
table rows. Nothing here asserts on a timing.

params.py holds the counts (`Params`); shared.py what the figures share; calls.py figures 1
and 2, lifecycle.py figure 3, delivery.py figures 4 and 6, idle.py figures 5 and 7, dashboard.py
figure 9, notify.py figure 15 (figure 8 is bench/swarm.py)."""
