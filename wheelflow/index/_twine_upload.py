"""One upload attempt through twine's API, run in a subprocess by :mod:`wheelflow.index.uploading`.

twine's command line re-POSTs by itself on any 5xx (up to five times). That is the wrong reflex
when a 5xx can come after the index stored the file, so this makes exactly one attempt
(``max_redirects=1``) and leaves the decision (read the index, then retry with backoff) to
wheelflow. The subprocess keeps twine's prints off wheelflow's stdout and bounds the attempt in
time. Credentials come from TWINE_USERNAME / TWINE_PASSWORD; the answer is one JSON line.
"""

from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> int:
    path, upload_url = argv
    import requests
    from twine.package import PackageFile
    from twine.repository import Repository

    repository = Repository(
        upload_url, os.environ.get("TWINE_USERNAME"), os.environ.get("TWINE_PASSWORD"), disable_progress_bar=True
    )
    try:
        response = repository.upload(PackageFile.from_filename(path, comment=None), max_redirects=1)
        answer = {"status": response.status_code, "reason": response.reason or "", "text": response.text[:500]}
    except requests.RequestException as exc:
        answer = {"status": None, "reason": type(exc).__name__, "text": ""}
    finally:
        repository.close()
    sys.stdout.write("\nWHEELFLOW-ANSWER " + json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
