-- etcd anchor (bench/suite.sh, section anchors): PUT through etcd's JSON gRPC gateway,
-- POST /v3/kv/put {"key": base64, "value": base64}, distinct keys e1, e2, ... in order (run
-- with -t1 so they form one sequence), each value 100 bytes carrying its number, like
-- bench/put-seq.lua.
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
local n = 0
request = function()
  n = n + 1
  local head = n .. "-"
  local value = head .. string.rep("x", 100 - #head)
  return wrk.format(nil, "/v3/kv/put", nil, '{"key":"' .. b64("e" .. n) .. '","value":"' .. b64(value) .. '"}')
end
