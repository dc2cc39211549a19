-- wrk script for bench/proxy_pair.py: requests at a fixed rate, spread over the
-- connections, then the report of report.lua.
--
--   wrk -t1 -c10 -d10s -s bench/wrk/fixed_rate.lua URL -- 1000
--
-- Debian's wrk (4.1) has no rate option, but calls delay() before each request a
-- connection sends and waits that many milliseconds. Here one schedule is kept
-- for all connections of the (single) thread: request k is due at start + k/rate,
-- and each delay() takes the next due time and waits until it. So the rate holds
-- even while a response is slow, as long as some connection is free (with 10
-- connections at 1,000/s, responses up to ~10 ms keep the pace). A request whose
-- slot has passed goes at once; the harness reports the rate actually reached.
-- Latency is wrk's: from writing a request to reading its whole response.
-- Use one thread (-t1): each thread has its own schedule.

local ffi = require("ffi")
ffi.cdef [[
   typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
   int clock_gettime(int clk_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("bench_timespec")

local function now_ms()
   ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
   return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local interval_ms = 1.0  -- set by init() from the rate
local next_due = nil

function init(args)
   local rate = tonumber(args[1] or "1000")
   interval_ms = 1000.0 / rate
end

function delay()
   local t = now_ms()
   if next_due == nil then
      next_due = t
   end
   local due = next_due
   next_due = next_due + interval_ms
   local wait = due - t
   if wait < 0 then
      return 0
   end
   return math.floor(wait + 0.5)
end

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")
