"""What the feed attack tests run in a namespace: one scheduled feed check, as the guard's
scheduler runs it (the configuration path is the only argument)."""

FEED_RUN = """
import sys
from floodguard.config import load
from floodguard.events import EventLog
from floodguard.feeds import FeedScheduler
from floodguard.kernel.ipset import SetManager
from floodguard.kernel.rules import render
from floodguard.store import Store
cfg = load(sys.argv[1])
FeedScheduler(cfg, EventLog(sys.stdout, json_mode=True), lambda: Store(cfg.state.path),
              lambda: SetManager(render(cfg).sets)).check()
"""
