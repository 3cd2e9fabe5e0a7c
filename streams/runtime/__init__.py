"""The Faust shell: the app, its stages, state and the worker's own observations."""
