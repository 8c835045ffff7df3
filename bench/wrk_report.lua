-- wrk script for bench.run. Keys come from a file named in BENCH_KEYS_FILE (one X-Api-Key value
-- per line, used round-robin), so secrets never appear on a command line; done() prints one JSON line.

local keys = {}
local file = os.getenv("BENCH_KEYS_FILE")
if file then
  for line in io.lines(file) do
    keys[#keys + 1] = line
  end
end
local next_key = 0

request = function()
  if #keys == 0 then
    return wrk.format("GET", wrk.path)
  end
  next_key = next_key % #keys + 1
  return wrk.format("GET", wrk.path, { ["X-Api-Key"] = keys[next_key] })
end

done = function(summary, latency, requests)
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, '
      .. '"p50_us": %d, "p90_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)
  ))
end
