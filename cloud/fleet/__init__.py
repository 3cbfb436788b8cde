"""The fleet: what the service knows of each edge box and camera, and what it does about it."""
