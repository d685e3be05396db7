"""A remote cell's ``input()`` and ``getpass()``, asked in the notebook.

The runner sends an ``input_request`` event; the kernel asks its own front end with
IPython's ``input``/``getpass.getpass`` (in a Jupyter kernel, ipykernel's: the stdin
channel, exactly as a local cell asks) and sends the answer back. Where the front end
allows no input (nbclient, ``allow_stdin=False``), the kernel's StdinNotImplementedError
message goes back instead and the remote cell raises the same.
"""

from __future__ import annotations

import builtins
import getpass
import sys

from remotecell._proto import pb
from remotecell.client import Client
from remotecell.contract.errors import RemoteCellError


def answer(client: Client, event: pb.JobEvent) -> None:
    """Asks ``event``'s input request here and answers it; a request that no longer
    waits (a replay) asks nothing."""
    request = event.input_request
    if request.answered:
        return
    from IPython.core.error import StdinNotImplementedError

    text, refused, eof = "", "", False
    try:
        # Looked up now: ipykernel replaces both while a cell runs.
        if request.password:
            text = getpass.getpass(request.prompt)
        else:
            text = builtins.input(request.prompt)
    except StdinNotImplementedError as err:
        refused = str(err) or "this frontend does not support input requests"
    except EOFError:
        eof = True
    try:
        client.answer_input(event.job_id, event.seq, text, refused=refused, eof=eof)
    except RemoteCellError as err:
        print(f"remotecell: the answer did not reach the cell: {err}", file=sys.stderr)
