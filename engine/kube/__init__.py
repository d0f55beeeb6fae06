"""Everything dklb says to Kubernetes: the port state handlers call, and its implementations."""
