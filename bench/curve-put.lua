-- wrk script for bench/curves.sh: PUT with a value of VALUE_LEN bytes
-- (environment, default 100) against kvd (SYSTEM=kvd: PUT /kv/<key>, text
-- body) or etcd 3.4 (SYSTEM=etcd: POST /v3/kv/put, base64 JSON body), the
-- same key names as ../shared/bench/wrk/*.lua. The keyspace shrinks for
-- large values so the prebuilt requests stay under ~64 MiB per thread.
-- Prints one RESULT line like the shared scripts.
VALUE_LEN = tonumber(os.getenv("VALUE_LEN") or "100")
SYSTEM = os.getenv("SYSTEM") or "kvd"
KEYSPACE = math.max(16, math.min(10000, math.floor(64 * 1024 * 1024 / (VALUE_LEN + 64))))

local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    out[#out + 1] = b64chars:sub(math.floor(n / 262144) % 64 + 1, math.floor(n / 262144) % 64 + 1) ..
      b64chars:sub(math.floor(n / 4096) % 64 + 1, math.floor(n / 4096) % 64 + 1) ..
      (b and b64chars:sub(math.floor(n / 64) % 64 + 1, math.floor(n / 64) % 64 + 1) or "=") ..
      (c and b64chars:sub(n % 64 + 1, n % 64 + 1) or "=")
  end
  return table.concat(out)
end

local nthreads = 0
function setup(thread)
  thread:set("tid", nthreads)
  nthreads = nthreads + 1
end

local reqs = {}
local counter = 0
function init(args)
  local value = string.rep("0123456789", math.floor(VALUE_LEN / 10)) .. string.rep("x", VALUE_LEN % 10)
  local vb64 = SYSTEM == "etcd" and b64(value) or nil
  for k = 0, KEYSPACE - 1 do
    local key = string.format("k%05d", k)
    if SYSTEM == "etcd" then
      reqs[k] = wrk.format("POST", "/v3/kv/put", { ["Content-Type"] = "application/json" },
        '{"key":"' .. b64(key) .. '","value":"' .. vb64 .. '"}')
    else
      reqs[k] = wrk.format("PUT", "/kv/" .. key, { ["Content-Type"] = "text/plain" }, value)
    end
  end
  counter = ((tid or 0) * 5003) % KEYSPACE
end

function request()
  local r = reqs[counter]
  counter = counter + 1
  if counter >= KEYSPACE then counter = 0 end
  return r
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT op=put requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d non2xx=%d connect_err=%d read_err=%d write_err=%d timeout=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.status, e.connect, e.read, e.write, e.timeout))
end
