"""`isthmus check`: the checks that fetch from a cluster and its pods, and the runner.

- `catalog`: the categories (`pre_install()`, `installed(proxy=...)`) and the
  `CheckEnv` a run shares;
- `cluster`: the checked cluster through lightkube (`KubeCluster`);
- `probes`: proxies' admin and inbound ports, the injector's webhook;
- `runner`: runs categories, retrying what may settle, stopping at a fatal error.

The judgements that need no I/O are `isthmus.core.checks`'.
"""
