"""Submit one job and sync it, in a process of its own, so that a test can kill it.

``python -m tests.client.submitter REPLICA SERVER TOKEN KIND PAYLOAD_JSON`` prints the
job's id as soon as it is saved locally, then ``synced`` once the upload is acknowledged.
"""

from __future__ import annotations

import json
import sys

import errands


def main() -> None:
    replica, server, token, kind, payload = sys.argv[1:6]
    with errands.Client(replica=replica, server=server, token=token) as client:
        job = client.submit(kind, json.loads(payload))
        print(job.id, flush=True)
        client.sync()
    print("synced", flush=True)


if __name__ == "__main__":
    main()
