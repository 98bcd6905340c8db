"""The etcd engine: desired state in etcd, one agent per host that converges toward it (issue 14).

    client      a thin wrapper over aetcd: endpoints from URLs, a big receive limit, Range at a revision,
                one lease keep-alive stream per process
    keys        the key layout under /nestbed
    blobs       zlib-compressed, content-addressed chunks (<= 1 MiB each) and the txns that write them
    generation  the experiment's generation, raised by compare-and-swap only when its spec changes
    records     what a host's manifest, status and alive keys hold
    sharing     an experiment's plans as one shared document (the parts the same on every host) + each host's part
    shared_cache  an agent process's shared documents, parsed, by sha: fetched only when the sha changes
    publish     the controller: publish every host's plan, wait until every status reached the generation
    agent       `nestbed agent --etcd URL --host NAME`: re-list, reconcile, watch; status; a lease
"""
import os

# Before any module of the package loads grpc (agent.py imports it first): its fork handlers break every fork made
# while a watch stream is open ("Other threads are currently calling into gRPC, skipping fork() handlers"; the
# realizer's preflight probes fork a child, which then fails: measured, "no htb qdisc" on a kernel that has it).
# Our forks never use gRPC in the child. Set here, not in client.py: an agent started by systemd or Kubernetes
# has no controller's environment that set it already (the emulated hosts' agents inherited it, which hid this).
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"

