"""Submit jobs and sync them, in a process of its own, so that a test can kill it.

``python -m tests.client.submitter REPLICA SERVER TOKEN KIND PAYLOAD_JSON [--loop]``
prints each job's id as soon as it is saved locally, then syncs; with ``--loop`` it
does so again and again until killed, else it prints ``synced`` and exits.
"""

from __future__ import annotations

import json
import sys

import errands


def main() -> None:
    replica, server, token, kind, payload = sys.argv[1:6]
    loop = sys.argv[6:] == ["--loop"]
    with errands.Client(replica=replica, server=server, token=token) as client:
        while True:
            job = client.submit(kind, json.loads(payload))
            print(job.id, flush=True)
            client.sync()
            if not loop:
                break
    print("synced", flush=True)


if __name__ == "__main__":
    main()
