"""Small pieces shared by the control plane, the agent and the client: logging set-up,
how to dial the control plane, and backoff."""
