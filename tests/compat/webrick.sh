#!/usr/bin/env bash
# compat/webrick.sh BUILD_DIR - ruby WEBrick (ruby-webrick: a thread per
# connection, keep-alive). WEBrick has no per-connection request limit, so
# the handler ends keep-alive on every 100th request of a connection, so
# that an old copy drains. Under wrk.
BUILD=${1:?usage: webrick.sh BUILD_DIR}
NAME=compat-webrick
. "$(dirname "$0")/../run-lib.sh"
. "$(dirname "$0")/lib.sh"
compat_need webrick
SERVER="ruby $(/usr/bin/ruby -e 'print RUBY_VERSION'), webrick $(/usr/bin/ruby -rwebrick -e 'print WEBrick::VERSION')"
MODE="HTTPServer, a thread per connection, keep-alive; wrk -c$CONNS"
NEEDS="keep-alive ended by the handler (res.keep_alive = false every 100 requests): WEBrick has no per-connection limit (without it, 20 resets at the drain timeout in a run)"
run_tmp
run_port
cat >"$T/server.rb" <<'RB'
require "webrick"
served = Hash.new(0)
lock = Mutex.new
server = WEBrick::HTTPServer.new(BindAddress: "127.0.0.1", Port: Integer(ARGV[0]),
                                 Logger: WEBrick::Log.new($stderr, WEBrick::Log::WARN),
                                 AccessLog: [])
server.mount_proc("/") do |req, res|
  res.body = "hello from webrick\n"
  lock.synchronize do
    peer = req.peeraddr[1]
    if (served[peer] += 1) >= 100
      res.keep_alive = false
      served.delete(peer)
    end
  end
end
server.start
RB
CMD=(/usr/bin/ruby "$T/server.rb" "$PORT")
run_restarts
