-- wrk script for the saturation benchmarks: distinct, valid, authenticated bookings.
--
--   wrk -t2 -c32 -d10s --timeout 10s -s bench/wrk/bookings.lua URL -- SECRET PREFIX [LIMIT] [STATUSES] [MARKER] [PEOPLE]
--
-- Each wrk thread numbers its own bookings (bookingId PREFIX-THREAD-N), so no two
-- requests of a run carry the same booking. LIMIT > 0 stops each thread after
-- LIMIT answers (a backlog of about threads x LIMIT); STATUSES = 1 counts every
-- status code in response() (costs a little CPU: wrk then parses each answer's
-- headers into Lua). A thread that reaches LIMIT creates the file MARKER<thread>
-- PEOPLE > 0 repeats contacts: booking N is person N mod PEOPLE (as bench.loadgen's
-- --people). (wrk itself sleeps out -d; bench.harness sends it SIGINT once every thread is
-- done, and wrk then reports as usual). done() prints one line "WRK_JSON {...}" for bench.harness.

local threads = {}
local next_id = 0

function setup(thread)
   thread:set("thread_id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

local secret, prefix, limit, counting, marker, people
local n = 0
local answers = 0
statuses = {}

function init(args)
   secret = args[1]
   prefix = args[2] or "wrk"
   limit = tonumber(args[3] or "0")
   counting = (args[4] == "1")
   marker = args[5]
   if marker == "" then marker = nil end
   people = tonumber(args[6] or "0")
   wrk.headers["Content-Type"] = "application/json"
   wrk.headers["X-Webhook-Secret"] = secret
   if not counting and limit == 0 then
      response = nil -- no per-answer Lua call at all: wrk counts non-2xx/3xx itself
   end
end

function request()
   n = n + 1
   local id = string.format("%s-%d-%d", prefix, thread_id, n)
   local who = id
   if people > 0 then
      who = string.format("%s-%d", prefix, n % people)
   end
   local body = string.format(
      '{"bookingId":"%s","eventType":"%s","name":"Person %s","email":"person.%s@example.com",'
      .. '"company":"Company %d %s","scheduledDate":"2027-06-15T10:00:00Z","duration":60,'
      .. '"source":"bookme"}',
      id, (n % 2 == 1) and "workshop" or "30min-consultation", who, who, n % 60, prefix)
   return wrk.format("POST", nil, nil, body)
end

function response(status, headers, body)
   if counting then
      local key = tostring(status)
      statuses[key] = (statuses[key] or 0) + 1
   end
   if limit > 0 then
      answers = answers + 1
      if answers == limit then
         if marker then
            io.open(marker .. thread_id, "w"):close()
         end
         wrk.thread:stop()
      end
   end
end

local function json_statuses()
   local total = {}
   for _, thread in ipairs(threads) do
      local counts = thread:get("statuses")
      if counts then
         for code, count in pairs(counts) do
            total[code] = (total[code] or 0) + count
         end
      end
   end
   local parts = {}
   for code, count in pairs(total) do
      table.insert(parts, string.format('"%s":%d', code, count))
   end
   return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d},'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f},"statuses":%s}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.timeout, e.status,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      latency.mean, json_statuses()))
end
