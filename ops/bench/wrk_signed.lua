-- Signed WhatsApp Cloud webhooks for wrk, each message id sent once.
--
-- wrk's Lua has no HMAC, so ops/bench/ingest.py precomputes the signatures into
-- a file that init() reads (a script holding the bodies as literals fails to
-- load, and wrk then silently sends GETs). File format, one item per line:
--   line 1: the body before the message id
--   line 2: the body after the message id
--   then:   <message id> TAB <X-Hub-Signature-256 value>
-- body = line1 .. id .. line2, byte for byte what Python signed.
--
-- Thread k of n keeps lines k, k+n, k+2n, ...: ids stay unique across threads.
-- response() counts 200s, repeats ("idempotent":true) and everything else, and
-- writes each answer's trace_id to <acks>.<k> so the caller can check every
-- acknowledged request against webhooks.raw. done() prints one line:
--   BENCH_RESULT {json}
--
-- Arguments (after `--`): <bodies file> <threads> [<acks prefix>]

local threads = {}
local next_tid = 0

function setup(thread)
   thread:set("tid", next_tid)
   next_tid = next_tid + 1
   table.insert(threads, thread)
end

-- per-thread state (each wrk thread runs its own copy of this script)
local ids, sigs = {}, {}
local count, pos = 0, 0
local prefix, suffix
local hdrs
local acks_file = nil
ok, repeats, errors, wrapped, traces = 0, 0, 0, 0, 0

function init(args)
   local path, nthreads, acks = args[1], tonumber(args[2]), args[3]
   local me = tid or 0
   local f = assert(io.open(path, "r"))
   prefix = f:read("*l")
   suffix = f:read("*l")
   local i = 0
   for line in f:lines() do
      if i % nthreads == me then
         local tab = string.find(line, "\t", 1, true)
         count = count + 1
         ids[count] = string.sub(line, 1, tab - 1)
         sigs[count] = string.sub(line, tab + 1)
      end
      i = i + 1
   end
   f:close()
   assert(count > 0, "no bodies for thread " .. me .. " in " .. path)
   hdrs = { ["Content-Type"] = "application/json" }
   if acks and acks ~= "" then
      acks_file = assert(io.open(acks .. "." .. me, "w"))
      acks_file:setvbuf("full", 1048576)
   end
end

function request()
   pos = pos + 1
   if pos > count then
      pos = 1
      wrapped = wrapped + 1
   end
   hdrs["X-Hub-Signature-256"] = sigs[pos]
   return wrk.format("POST", wrk.path, hdrs, prefix .. ids[pos] .. suffix)
end

function response(status, headers, body)
   if status ~= 200 then
      errors = errors + 1
      return
   end
   if string.find(body, '"idempotent":true', 1, true) then
      repeats = repeats + 1
      return
   end
   ok = ok + 1
   if acks_file then
      local trace = string.match(body, '"trace_id":"(%x+)"')
      if trace then
         traces = traces + 1
         acks_file:write(trace, "\n")
         if traces % 4096 == 0 then
            acks_file:flush()
         end
      end
   end
end

function done(summary, latency, requests)
   local t = { ok = 0, repeats = 0, errors = 0, wrapped = 0, traces = 0 }
   for _, thread in ipairs(threads) do
      for k, _ in pairs(t) do
         t[k] = t[k] + (thread:get(k) or 0)
      end
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,' ..
      '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
      '"ok":%d,"repeats":%d,"non200":%d,"wrapped":%d,"traces":%d}\n',
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean,
      e.connect, e.read, e.write, e.status, e.timeout,
      t.ok, t.repeats, t.errors, t.wrapped, t.traces))
end
