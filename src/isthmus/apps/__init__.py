"""Demo workloads that run as pods in an isthmus cluster.

Nothing under `isthmus.apps` imports the mesh: these packages are ordinary
applications that the mesh carries, kept here so the demo needs no other install.
"""
