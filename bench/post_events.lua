-- wrk script: POST deployment events, a different product/version/invoke id on every request.
-- Environment: BENCH_MODE = versioner | devgrid, BENCH_TOKEN, BENCH_BATCH (devgrid events per request),
-- BENCH_RUN (a nonce so versions never repeat across runs on one database).
local mode = os.getenv("BENCH_MODE") or "versioner"
local token = os.getenv("BENCH_TOKEN") or ""
local batch = tonumber(os.getenv("BENCH_BATCH") or "100")
local run = os.getenv("BENCH_RUN") or "0"
local products = {}
for i = 1, 40 do products[i] = string.format("svc-%02d", i) end
local envs = {"production", "production", "staging", "development"}
local threads = {}
local tid = 0
local n = 0

function setup(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end

local function sha(a, b)
  return string.format("%08x%08x%08x%08x%08x", a, b, (a * 7919 + b) % 4294967296, b * 31 % 4294967296, a + b)
end

local function versioner_body()
  -- two requests per deployment: "started", then "success" with the same invoke id
  local d = math.floor(n / 2)
  local status = (n % 2 == 0) and "started" or "success"
  local product = products[d % #products + 1]
  local version = string.format("2.%s.%d.%d", run, tid, d)
  return string.format(
    '{"product_name":"%s","version":"%s","environment_name":"%s","status":"%s","deployed_by":"ci-bot",' ..
    '"scm_sha":"%s","scm_branch":"main","scm_repository":"git@example.com:acme/%s.git",' ..
    '"build_url":"https://ci.example.com/job/%s/%d","build_number":"%d","invoke_id":"r%s-t%d-%d",' ..
    '"description":"deploy %s %s","extra_metadata":{"region":"eu-west-1","pipeline":"release"}}',
    product, version, envs[d % #envs + 1], status, sha(tid, d), product, product, d, d, run, tid, d,
    product, version)
end

local function devgrid_body()
  local parts = {}
  for i = 1, batch do
    local d = n * batch + i
    local product = products[d % #products + 1]
    parts[i] = string.format(
      '{"type":"event-deploy","entityId":"%s","attributes":{"env":"%s","status":"success",' ..
      '"build_commit_sha":"%s","build_id":"r%s-t%d-%d","build_url":"https://ci.example.com/job/%d",' ..
      '"initiator":"ci-bot","description":"deploy %s"}}',
      product, envs[d % #envs + 1], sha(tid, d), run, tid, d, d, product)
  end
  return '{"events":[' .. table.concat(parts, ",") .. ']}'
end

function init(args)
  tid = thread_id or 0
end

function request()
  n = n + 1
  if mode == "devgrid" then
    return wrk.format("POST", "/events", {["Content-Type"] = "application/json", ["x-api-key"] = token},
                      devgrid_body())
  end
  return wrk.format("POST", "/deployment-events/",
                    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token},
                    versioner_body())
end

function done(summary, latency, requests)
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"non2xx":%d,"socket_errors":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
