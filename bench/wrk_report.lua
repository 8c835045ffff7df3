-- wrk script for bench/run.py: headers come from the environment (BENCH_HEADER_<n>_NAME / _VALUE),
-- so secrets never appear on a command line; done() writes one JSON line the runner parses.

for index = 1, 8 do
  local name = os.getenv("BENCH_HEADER_" .. index .. "_NAME")
  local value = os.getenv("BENCH_HEADER_" .. index .. "_VALUE")
  if name == nil or value == nil then
    break
  end
  wrk.headers[name] = value
end

done = function(summary, latency, requests)
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "status_errors": %d, "connect_errors": %d, '
      .. '"read_errors": %d, "write_errors": %d, "timeouts": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests,
    summary.duration,
    summary.errors.status,
    summary.errors.connect,
    summary.errors.read,
    summary.errors.write,
    summary.errors.timeout,
    latency:percentile(50),
    latency:percentile(99),
    latency.max
  ))
end
