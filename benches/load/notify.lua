-- wrk script for benches/load.sh. Two ways to make requests:
--
-- * $WRK_POOL set (the default for small bodies): each thread reads its pool of
--   notifications signed beforehand, $WRK_POOL/<thread>.txt (lines "<signature> <body>",
--   the body's id "bench-<run>-<thread>-<k>-<template>"), formats every request once, and
--   sends them in turn, so that no CPU of the machine goes to signing while the servers
--   are measured. Request <sequence> is pool entry k = (sequence - 1) % size + 1. A thread
--   may hold several connections here, so answers are counted, not matched to requests:
--   $WRK_REPORT gets "<run> <thread> sent=<requests> failed=<answers other than 200>".
-- * otherwise every request is a different notification, signed here like Meta signs it
--   (HMAC-SHA256 through OpenSSL's libcrypto, over LuaJIT's FFI): the templates listed in
--   $WRK_MANIFEST (lines "<changes> <file>") rotate, and each request writes its own id,
--   "bench-<run>-<thread>-<sequence>-<template>", over the placeholder @UID@ of every
--   entry id.
-- wrk runs one connection per thread here (-t = -c),
-- so each answer belongs to the last request the thread made (wrk may make one it never
-- sends, when a connection starts); the sequences answered 200 are written to
-- $WRK_REPORT (lines "<run> <thread> <ranges first-last,...>").
--
-- benches/load/verify.py finds the notifications answered 200 in Kafka.

local ffi = require("ffi")
ffi.cdef [[
typedef struct evp_md_st EVP_MD;
const EVP_MD *EVP_sha256(void);
unsigned char *HMAC(const EVP_MD *md, const void *key, int key_len,
                    const unsigned char *data, size_t data_len,
                    unsigned char *out, unsigned int *out_len);
]]
local crypto = ffi.load("crypto")
local digest = ffi.new("unsigned char[32]")
local digest_len = ffi.new("unsigned int[1]")
local secret = assert(os.getenv("WRK_SECRET"), "set WRK_SECRET")
local run = assert(os.getenv("WRK_RUN"), "set WRK_RUN")

local function sign(body)
  crypto.HMAC(crypto.EVP_sha256(), secret, #secret, body, #body, digest, digest_len)
  local hex = {}
  for i = 0, 31 do hex[i + 1] = string.format("%02x", digest[i]) end
  return "sha256=" .. table.concat(hex)
end

local manifest = assert(os.getenv("WRK_MANIFEST"), "set WRK_MANIFEST")
local pool_dir = os.getenv("WRK_POOL")
local templates = {}
local pool = {}
local sequence = 0
local ranges = {}
-- Read by the main state through thread:get after the run.
answered_ranges = ""
sent = 0
failed = 0

function init(args)
  if pool_dir then
    for line in io.lines(pool_dir .. "/" .. thread_number .. ".txt") do
      local signature, body = line:match("^(%S+) (.*)$")
      pool[#pool + 1] = wrk.format("POST", nil, {
        ["Content-Type"] = "application/json",
        ["X-Hub-Signature-256"] = signature,
      }, body)
    end
    return
  end
  for line in io.lines(manifest) do
    local file = line:match("^%d+ (%S+)$")
    local handle = assert(io.open(file, "rb"))
    templates[#templates + 1] = handle:read("*a")
    handle:close()
  end
end

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("thread_number", #threads)
end

function request()
  sequence = sequence + 1
  if pool_dir then
    sent = sequence
    return pool[(sequence - 1) % #pool + 1]
  end
  local template = (sequence + thread_number) % #templates + 1
  local uid = string.format("bench-%s-%d-%d-%d", run, thread_number, sequence, template)
  local body = templates[template]:gsub("@UID@", uid)
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["X-Hub-Signature-256"] = sign(body),
  }, body)
end

function response(status, headers, body)
  if pool_dir then
    if status ~= 200 then failed = failed + 1 end
    return
  end
  if status ~= 200 then
    return
  end
  local last = ranges[#ranges]
  if last and last[2] == sequence - 1 then
    last[2] = sequence
  else
    ranges[#ranges + 1] = { sequence, sequence }
  end
  local text = {}
  for i, range in ipairs(ranges) do text[i] = range[1] .. "-" .. range[2] end
  answered_ranges = table.concat(text, ",")
end

function done(summary, latency, requests)
  local report = assert(io.open(assert(os.getenv("WRK_REPORT"), "set WRK_REPORT"), "w"))
  for number, thread in ipairs(threads) do
    if pool_dir then
      report:write(string.format("%s %d sent=%d failed=%d\n", run, number,
        thread:get("sent"), thread:get("failed")))
    else
      local answered = thread:get("answered_ranges")
      report:write(string.format("%s %d %s\n", run, number, answered ~= "" and answered or "-"))
    end
  end
  report:close()
  local errors = summary.errors
  io.write(string.format(
    "requests=%d seconds=%.3f non2xx=%d socket_errors=%d p50_us=%d p99_us=%d p999_us=%d max_us=%d\n",
    summary.requests, summary.duration / 1e6, errors.status,
    errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
