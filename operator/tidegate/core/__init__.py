"""Pure decisions: no I/O, no kopf, no Kubernetes client. `plan(observed) -> Plan`."""
