"""The parts of Open Cluster Management the add-on relies on, emulated over the sandbox's
API servers: registration, placement, the work agent and template add-on install.

Each controller reads through informers and writes through ``fl_kube`` over HTTP, like the
real hub and klusterlet components; the pure decisions (scheduling, claim exposure, config
resolution, status feedback) live in their own modules with table-driven tests.
"""
