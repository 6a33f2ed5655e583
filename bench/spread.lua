-- bench/spread.lua: wrk script of bench/compare.sh's "slate redis, N URLs" row. Every
-- request asks for one of N warmed report URLs, /report?id=1 .. /report?id=N, at random,
-- so that lookups of one entry rarely meet in flight (each hit then costs its own Redis
-- GET). No response() hook: wrk would then hand every 20 KiB body to Lua. Usage:
--   wrk -t2 -c64 -d10s -s bench/spread.lua http://127.0.0.1:PORT -- N

function init(args)
   keys = tonumber(args[1]) or 1000
   -- Each thread its own sequence (identical ones would make their lookups meet): the
   -- address of a fresh table differs between the threads' Lua states.
   local addr = tonumber(tostring({}):match("0x(%x+)") or "0", 16) or 0
   math.randomseed(os.time() + addr % 1000003)
end

function request()
   return wrk.format("GET", "/report?id=" .. math.random(1, keys))
end
