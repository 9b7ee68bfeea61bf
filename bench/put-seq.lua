-- PUT fresh keys s1, s2, s3, ... in order, each with a 100-byte value carrying its number, so
-- every write is distinct and a replica missing any of them is visible (bench/suite.sh,
-- section replicas). Run with one wrk thread (-t1) so the numbering is one sequence.
wrk.method = "PUT"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  local head = n .. "-"
  local value = head .. string.rep("x", 100 - #head)
  return wrk.format(nil, "/kv-store/keys/s" .. n, nil, '{"value":"' .. value .. '","causal-context":{}}')
end
