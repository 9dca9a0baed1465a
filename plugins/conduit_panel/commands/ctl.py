"""``conduit ctl HOST:PORT ACTION``: steer a running conduit through its control panel."""

from __future__ import annotations

import argparse
import json
import sys

DESCRIPTION = """Steer a running conduit (started with --panel) from a terminal or a script:

  conduit ctl 127.0.0.1:8765 pause          stop analysing (recording goes on)
  conduit ctl 127.0.0.1:8765 resume
  conduit ctl 127.0.0.1:8765 reset          zero the histograms (as kill -USR1)
  conduit ctl 127.0.0.1:8765 new-run [N]    close this run's files and open run N's (default: next)
  conduit ctl 127.0.0.1:8765 set pointcloud.peak_threshold=60 [KEY=VALUE ...]
  conduit ctl 127.0.0.1:8765 stop           finish events in flight and close (as Ctrl-C)

A panel listening beyond this machine needs its token: --token or $CONDUIT_PANEL_TOKEN.
Exit status: 0 done, 1 refused (the reason is printed), 2 nothing answers."""

ACTIONS = ("pause", "resume", "stop", "reset", "new-run", "set")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("address", metavar="HOST:PORT", help="the panel's address, e.g. 127.0.0.1:8765")
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("values", nargs="*", metavar="VALUE", help="new-run: the run number; set: KEY=VALUE ...")
    parser.add_argument("--token", default=None, help="the panel's token (default: $CONDUIT_PANEL_TOKEN)")


def main(args: argparse.Namespace) -> int:
    from ..client import PanelClient, PanelError

    body: dict = {}
    if args.action == "set":
        if not args.values:
            print("conduit ctl: set needs KEY=VALUE (e.g. pointcloud.peak_threshold=60)", file=sys.stderr)
            return 2
        body = {"set": args.values}
    elif args.action == "new-run" and args.values:
        try:
            body = {"run": int(args.values[0])}
        except ValueError:
            print(f"conduit ctl: new-run {args.values[0]}: a run number is an integer", file=sys.stderr)
            return 2
    elif args.values:
        print(f"conduit ctl: {args.action} takes no value", file=sys.stderr)
        return 2
    try:
        answer = PanelClient(args.address, token=args.token).post(args.action, body)
    except PanelError as err:
        for line in err.lines:
            print(f"conduit ctl {args.action}: {line}", file=sys.stderr)
        return 2 if err.status is None else 1
    print(_describe(args.action, answer))
    return 0


def _describe(action: str, answer: dict) -> str:
    if action == "new-run":
        return f"run {answer['run']} started; closed: {', '.join(answer['closed']) or 'no files'}"
    if action == "set":
        change = answer.get("change")
        if change is None:
            return "nothing changed: every value was already in force"
        return f"from event #{change['sequence']} on: " + ", ".join(
            f"{k} {json.dumps(v['old'])} -> {json.dumps(v['new'])}" for k, v in change["changes"].items())
    if action in ("pause", "resume"):
        state = "paused" if action == "pause" else "resumed"
        return f"analysis {state} from event #{answer['from_sequence']}" if answer["changed"] else \
            f"analysis was already {state}"
    if action == "reset":
        return f"histograms reset from event #{answer['from_sequence']}"
    return "stopping: events in flight finish, every file is closed"
