-- etcd anchor (bench/suite.sh, section anchors): read one key through etcd's JSON gRPC
-- gateway, POST /v3/kv/range {"key": base64} (etcd's default, linearizable read), random
-- keys e1..e10000, written first by etcd-put.lua (a key it did not reach answers 200 with no
-- kvs). Bodies are encoded once, up front.
local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local alphabet = {}
for i = 1, 64 do alphabet[i - 1] = chars:sub(i, i) end
local function b64(s)
  local out, n = {}, #s
  for i = 1, n, 3 do
    local a, b, c = s:byte(i, i + 2)
    local v = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1 = math.floor(v / 262144) % 64
    local c2 = math.floor(v / 4096) % 64
    local c3 = math.floor(v / 64) % 64
    local c4 = v % 64
    out[#out + 1] = alphabet[c1] .. alphabet[c2] .. (b and alphabet[c3] or "=") .. (c and alphabet[c4] or "=")
  end
  return table.concat(out)
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {}
for k = 1, 10000 do bodies[k] = '{"key":"' .. b64("e" .. k) .. '"}' end
request = function()
  return wrk.format(nil, "/v3/kv/range", nil, bodies[math.random(1, 10000)])
end
