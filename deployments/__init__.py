"""Deployments of wheelflow's flows (see prefect.yaml at the top level)."""
