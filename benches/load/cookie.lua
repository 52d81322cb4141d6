-- wrk script for the cookie scenario (benches/load.sh).
--
--   wrk ... -s cookie.lua http://127.0.0.1:PORT/cookie -- 'bench_sid=123; tether_bench=...'
--
-- Every request carries the Cookie header given as the script argument: load.sh asks the proxy
-- once with curl and passes "bench_sid=<random>" plus the affinity cookie from the proxy's first
-- Set-Cookie (HAProxy's inserted cookie, tether's signed one; NGINX OSS sets none and hashes
-- bench_sid instead). So every measured request takes the proxy's "valid affinity cookie" path,
-- the common case in production, with one cookie reused by all connections.
--
-- Without an argument the script captures the first Set-Cookie itself, in a response()
-- callback. That is not the default because wrk then hands every response's headers to Lua,
-- spending client CPU, which is what limits this 2-core benchmark. (wrk looks for request() and
-- response() after init() has run, so defining them inside init() is what selects the mode.)

init = function(args)
  if args[1] and args[1] ~= "" then
    -- Static request: wrk builds it once from wrk.path and wrk.headers.
    wrk.headers["Cookie"] = args[1]
    return
  end

  local sid = "bench_sid=" .. tostring(math.random(1, 1000000000))
  local affinity = nil

  request = function()
    local cookie = sid
    if affinity then
      cookie = sid .. "; " .. affinity
    end
    return wrk.format(nil, nil, { ["Cookie"] = cookie })
  end

  response = function(status, headers, body)
    if affinity then
      return
    end
    for name, value in pairs(headers) do
      if string.lower(name) == "set-cookie" then
        affinity = string.match(value, "^%s*([^;]+)")
        return
      end
    end
  end
end
