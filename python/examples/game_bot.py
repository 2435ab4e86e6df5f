#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""game_bot: bot players for baton-game-server, in Python; the same
messages and checks as examples/baton-game-client.c. Each bot moves on the
grid every interval and checks every acknowledgement: the request it
answers (none lost, none twice, in order), the position (the state moved
with the session) and the world version (only grows).

  game_bot.py --connect tcp://IP:PORT (--tls-ca FILE | --insecure)
              [--bots N] [--duration S] [--interval MS] [--window W]
              [--progress N]

SIGTERM or SIGINT ends the run early (the bots stop sending and wait for
what is outstanding, as at the end of --duration). On stderr: "game_bot:
N sessions open" once every bot is welcomed, "game_bot: all N at ADDR
(moves M)" each time every live session has moved to one address, and
with --progress N "game_bot: acked K" each time K, the acknowledgements
received, passes a multiple of N. Prints
one line per bot with a problem, then a summary in baton-game-client's
format:
  bots N sent S acked A lost L dup D reorder R badstate B sessions_lost X
  moves M pause_ms p50 P p99 P max P rtt_ms p50 P p99 P max P
and exits 0 only if lost, dup, reorder, badstate and sessions_lost are 0.
"""

import argparse
import os
import selectors
import signal
import sys
import time

import baton_session

GRID = 1000
WINDOW = 64


class Bot:
    def __init__(self, index):
        self.index = index
        self.c = None
        self.x = self.y = GRID // 2
        self.next_req = self.next_ack = 1
        self.last_version = 0
        self.dup = self.reorder = self.badstate = 0
        self.lost_session = None  # None while alive, else the error (or "closed")
        self.opened = False
        self.sx = [0] * WINDOW  # expected positions of outstanding requests
        self.sy = [0] * WINDOW
        self.sent_at = [0.0] * WINDOW


class Game:
    def __init__(self, args):
        self.args = args
        self.pauses, self.rtts = [], []
        self.opened = 0
        self.moves_done = 0
        self.where = args.connect
        self.acked = 0

    def on_open(self, bot):
        bot.opened = True
        self.opened += 1
        if self.opened == self.args.bots:
            print("game_bot: %d sessions open" % self.opened, file=sys.stderr, flush=True)

    def on_message(self, bot, data):
        try:
            parts = data.decode("ascii").split()
            if len(parts) != 6 or parts[0] != "A":
                raise ValueError
            req, x, y, moves, ver = (int(p) for p in parts[1:])
        except ValueError:
            bot.badstate += 1
            return
        if req < bot.next_ack:
            bot.dup += 1
            return
        if req > bot.next_ack:
            bot.reorder += 1
            bot.next_ack = req  # resynchronise; counted once
        i = req % WINDOW
        if x != bot.sx[i] or y != bot.sy[i] or moves != req or ver <= bot.last_version:
            bot.badstate += 1
        bot.last_version = ver
        self.rtts.append(time.monotonic() - bot.sent_at[i])
        bot.next_ack = req + 1
        self.acked += 1
        if self.args.progress and self.acked % self.args.progress == 0:
            print("game_bot: acked %d" % self.acked, file=sys.stderr, flush=True)

    def on_moved(self, bot, client, address, error, pause):
        if error is None:
            self.pauses.append(pause)
            self.moves_done += 1
            self.check_all_moved()

    def check_all_moved(self):
        """Say when every live session has moved to one address (other
        than the last one said), so that a script can wait for the bots'
        view of a move instead of sleeping."""
        live = [b for b in self.bots if b.lost_session is None]
        addrs = {b.c.address for b in live}
        if len(addrs) == 1 and self.where not in addrs:
            self.where = addrs.pop()
            print("game_bot: all %d at %s (moves %d)" % (len(live), self.where,
                                                          self.moves_done),
                  file=sys.stderr, flush=True)

    def on_lost(self, bot, client, error):
        bot.lost_session = error or "closed"
        print("bot %s: session ended: %s" % (client.id,
                                             error.strerror if error else "closed normally"),
              file=sys.stderr, flush=True)

    def step(self, bot):
        n = bot.next_req
        dx, dy = n % 3 - 1, (n // 3) % 3 - 1
        bot.x = (bot.x + dx + GRID) % GRID
        bot.y = (bot.y + dy + GRID) % GRID
        i = n % WINDOW
        bot.sx[i], bot.sy[i] = bot.x, bot.y
        bot.sent_at[i] = time.monotonic()
        try:
            bot.c.send(b"M %d %d %d" % (n, dx, dy))
            bot.next_req += 1
        except baton_session.SessionError:
            pass


def pct(values, p):
    if not values:
        return 0.0
    s = sorted(values)
    return s[int(p * (len(s) - 1))] * 1000.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connect", required=True)
    ap.add_argument("--bots", type=int, default=10)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--interval", type=int, default=100, help="ms")
    ap.add_argument("--window", type=int, default=1)
    ap.add_argument("--tls-ca", help="verify servers against this CA file")
    ap.add_argument("--insecure", action="store_true", help="plain TCP")
    ap.add_argument("--progress", type=int, default=0, metavar="N",
                    help="say each time N more acknowledgements came")
    args = ap.parse_args()
    if args.bots < 1 or args.interval < 1 or not 1 <= args.window < WINDOW:
        ap.error("bad --bots, --interval or --window")
    if bool(args.tls_ca) == args.insecure:
        ap.error("give --tls-ca FILE or --insecure")

    game = Game(args)
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))
    sel = selectors.DefaultSelector()
    tls = {"cafile": args.tls_ca} if args.tls_ca else {"insecure": True}
    game.bots = bots = [Bot(i) for i in range(args.bots)]
    for b in bots:
        b.c = baton_session.Client(
            args.connect, **tls,
            on_open=lambda c, b=b: game.on_open(b),
            on_message=lambda c, d, b=b: game.on_message(b, d),
            on_moved=lambda c, a, e, p, b=b: game.on_moved(b, c, a, e, p),
            on_lost=lambda c, e, b=b: game.on_lost(b, c, e))
        sel.register(b.c.fileno(), selectors.EVENT_READ, b)

    interval = args.interval / 1000.0
    now = time.monotonic()
    end = now + args.duration
    next_tick = now
    stopping = False
    while True:
        now = time.monotonic()
        timeout = max(0.0, next_tick - now)
        for b in bots:
            t = b.c.timeout()
            if t is not None and t < timeout:
                timeout = t
        for key, _ in sel.select(timeout):
            key.data.c.dispatch()
        now = time.monotonic()
        for b in bots:
            t = b.c.timeout()
            if t is not None and t <= 0:
                b.c.dispatch()
        if not stopping and (now >= end or stop):
            stopping = True
            end = min(end, now)
        pending = any(b.lost_session is None and b.next_ack < b.next_req for b in bots)
        if stopping and (not pending or now >= end + 10):
            break
        if now < next_tick or stopping:
            continue
        next_tick += interval
        for b in bots:
            if b.lost_session is None and b.next_req - b.next_ack < args.window:
                game.step(b)

    sent = acked = lost = dup = reorder = bad = dead = 0
    for b in bots:
        missing = b.next_req - b.next_ack
        sent += b.next_req - 1
        acked += b.next_ack - 1
        lost += missing
        dup += b.dup
        reorder += b.reorder
        bad += b.badstate
        dead += b.lost_session is not None
        if missing or b.dup or b.reorder or b.badstate or b.lost_session is not None:
            print("bot %d %s: lost %d dup %d reorder %d badstate %d session %s" % (
                b.index, b.c.id, missing, b.dup, b.reorder, b.badstate,
                "ok" if b.lost_session is None else "lost"))
        sel.unregister(b.c.fileno())
        b.c.close()
    print("bots %d sent %d acked %d lost %d dup %d reorder %d badstate %d sessions_lost %d "
          "moves %d pause_ms p50 %.2f p99 %.2f max %.2f rtt_ms p50 %.2f p99 %.2f max %.2f" % (
              args.bots, sent, acked, lost, dup, reorder, bad, dead, len(game.pauses),
              pct(game.pauses, 0.5), pct(game.pauses, 0.99), pct(game.pauses, 1.0),
              pct(game.rtts, 0.5), pct(game.rtts, 0.99), pct(game.rtts, 1.0)), flush=True)
    return 1 if lost or dup or reorder or bad or dead else 0


if __name__ == "__main__":
    sys.exit(main())
