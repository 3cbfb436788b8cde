"""Cases: the closed loop from intake to verified closure, routing and escalation."""
