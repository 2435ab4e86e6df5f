-- wrk script: counts responses per 100 ms (2xx and others separately) and,
-- at the end, writes wrk's own totals and the per-100 ms series to the file
-- named by $WRK_OUT, so that the harness reads numbers rather than wrk's
-- human-readable report. wrk's Lua is LuaJIT, whose ffi gives a real clock.
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } wrk_series_timespec;
int clock_gettime(int clk, wrk_series_timespec *ts);
]]
local ts = ffi.new("wrk_series_timespec")
local floor = math.floor

local threads = {}
function setup(thread)
   table.insert(threads, thread)
end

ok = {}
bad = {}

function response(status, headers, body)
   ffi.C.clock_gettime(0, ts) -- CLOCK_REALTIME, the clock the harness uses
   local b = tonumber(ts.tv_sec) * 10 + floor(tonumber(ts.tv_nsec) / 100000000)
   if status >= 200 and status < 300 then
      ok[b] = (ok[b] or 0) + 1
   else
      bad[b] = (bad[b] or 0) + 1
   end
end

function done(summary, latency, requests)
   local f = assert(io.open(os.getenv("WRK_OUT"), "w"))
   local e = summary.errors
   f:write(string.format("requests %d\nbytes %d\nduration_us %d\n", summary.requests, summary.bytes, summary.duration))
   f:write(string.format("err_connect %d\nerr_read %d\nerr_write %d\nerr_timeout %d\nerr_status %d\n",
                         e.connect, e.read, e.write, e.timeout, e.status))
   f:write(string.format("lat_p50_us %d\nlat_p99_us %d\nlat_max_us %d\nlat_mean_us %d\n",
                         latency:percentile(50), latency:percentile(99), latency.max, latency.mean))
   local all_ok, all_bad = {}, {}
   for _, t in ipairs(threads) do
      for k, v in pairs(t:get("ok") or {}) do all_ok[k] = (all_ok[k] or 0) + v end
      for k, v in pairs(t:get("bad") or {}) do all_bad[k] = (all_bad[k] or 0) + v end
   end
   local keys = {}
   for k in pairs(all_ok) do keys[k] = true end
   for k in pairs(all_bad) do keys[k] = true end
   local sorted = {}
   for k in pairs(keys) do table.insert(sorted, k) end
   table.sort(sorted)
   for _, k in ipairs(sorted) do
      f:write(string.format("series %d %d %d\n", k * 100, all_ok[k] or 0, all_bad[k] or 0))
   end
   f:close()
end
