-- wrk script for benches/load.sh: POSTs pre-signed notifications, rotating over the
-- bodies listed in the manifest $WRK_MANIFEST (lines "<changes> <signature> <file>"),
-- and counts the 200s of each body. wrk runs one connection per thread here (-t = -c),
-- so each answer belongs to the last request of its thread.

local manifest = assert(os.getenv("WRK_MANIFEST"), "set WRK_MANIFEST")
local bodies, signatures, changes = {}, {}, {}
local next_index, last = 0, 1
ok_counts = ""
local ok = {}

function init(args)
  for line in io.lines(manifest) do
    local n, signature, file = line:match("^(%d+) (%S+) (%S+)$")
    local handle = assert(io.open(file, "rb"))
    bodies[#bodies + 1] = handle:read("*a")
    handle:close()
    signatures[#signatures + 1] = signature
    changes[#changes + 1] = tonumber(n)
    ok[#ok + 1] = 0
  end
  next_index = math.random(#bodies) - 1
end

function request()
  next_index = next_index % #bodies + 1
  last = next_index
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["X-Hub-Signature-256"] = signatures[last],
  }, bodies[last])
end

function response(status, headers, body)
  if status == 200 then
    ok[last] = ok[last] + 1
    ok_counts = table.concat(ok, ",")
  end
end

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function done(summary, latency, requests)
  local totals = {}
  for _, thread in ipairs(threads) do
    local counts = thread:get("ok_counts") or ""
    local i = 1
    for count in counts:gmatch("%d+") do
      totals[i] = (totals[i] or 0) + tonumber(count)
      i = i + 1
    end
  end
  -- The manifest again, for the change counts (done runs in the main Lua state).
  local expected, answered_ok = 0, 0
  local i = 1
  for line in io.lines(manifest) do
    local n = tonumber(line:match("^(%d+)"))
    expected = expected + (totals[i] or 0) * n
    answered_ok = answered_ok + (totals[i] or 0)
    i = i + 1
  end
  local errors = summary.errors
  io.write(string.format(
    "requests=%d seconds=%.3f ok=%d non2xx=%d socket_errors=%d expected_records=%d p50_us=%d p99_us=%d p999_us=%d max_us=%d\n",
    summary.requests, summary.duration / 1e6, answered_ok, errors.status,
    errors.connect + errors.read + errors.write + errors.timeout, expected,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end

