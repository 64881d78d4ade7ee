"""Deployment artefacts: Dockerfile, compose, nginx, Prometheus, Grafana, Kubernetes."""
