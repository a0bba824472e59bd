"""Hosts: the environments that hold a loaded model and render images (see base.py)."""
