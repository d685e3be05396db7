"""Deployments: cells promoted to services, their replicas and their calls."""
