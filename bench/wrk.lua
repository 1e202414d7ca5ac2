-- wrk script for the side-by-side benchmarks: each simulated tenant sends its
-- own key. Arguments (after `--`): a file of keys (one per line), the request
-- path, how keys are spread: `rotate` (each request the next key) or
-- `thread` (one key per wrk thread, so one thread is one tenant), and a think
-- time in milliseconds between an answer and the next request, and
-- `close` to ask for a new connection after each answer (else `keep-alive`).
-- `done` prints one JSON line with the counts and latency percentiles.

local keys = {}
local path = "/"
local spread = "rotate"
local think_ms = 0
local close = false
local counter = 0
local thread_key = nil
local threads_made = 0

-- Runs in the main Lua state; `tid` becomes a global of the thread's state.
function setup(thread)
  thread:set("tid", threads_made)
  threads_made = threads_made + 1
end

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then
      keys[#keys + 1] = line
    end
  end
  path = args[2] or "/"
  spread = args[3] or "rotate"
  think_ms = tonumber(args[4]) or 0
  close = args[5] == "close"
  local index = tonumber(tid) or 0
  thread_key = keys[(index % #keys) + 1]
  counter = index * 7919
end

function request()
  local key = thread_key
  if spread == "rotate" then
    counter = counter + 1
    key = keys[(counter % #keys) + 1]
  end
  local target = path
  -- `{n}` in the path becomes a number from 1 to 1000, for the data API.
  if string.find(target, "{n}", 1, true) then
    counter = counter + 1
    target = string.gsub(target, "{n}", tostring((counter * 7919) % 1000 + 1))
  end
  local method = "GET"
  local body = nil
  local headers = { ["Authorization"] = "Bearer " .. key }
  if close then
    headers["Connection"] = "close"
  end
  if string.sub(target, 1, 4) == "PUT " then
    method = "PUT"
    target = string.sub(target, 5)
    body = '{"customer":"c' .. tostring(counter % 100) .. '","total":' .. tostring(counter % 1000) .. '}'
    headers["Content-Type"] = "application/json"
  end
  return wrk.format(method, target, headers, body)
end

-- A client's pause between an answer and its next request (0: none).
function delay()
  return think_ms
end

function done(summary, latency, requests)
  local errors = summary.errors
  local out = string.format(
    '{"requests":%d,"duration_us":%d,"non_2xx":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,' ..
    '"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, errors.status, errors.connect, errors.read,
    errors.write, errors.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.mean, latency.max)
  io.write("WRK_JSON " .. out)
end
