"""The hub-agent contract: what travels between the hub manager, the spoke agent and the
training Job. Both sides import it; nothing here talks to Kubernetes."""
