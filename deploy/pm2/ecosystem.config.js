// PM2: a Node API in cluster mode next to Switchboard gateways on the same host.
//
//   pm2 start deploy/pm2/ecosystem.config.js --env production
//   pm2 save && pm2 startup
//
// The gateway is a native binary: run it in FORK mode (`interpreter: "none"`),
// never in PM2 cluster mode (that is Node's `cluster` module; the gateway has
// its own threads). To use more cores or survive a restart without dropping
// every client, run several gateways on different ports (GATEWAY_PORTS below)
// and put nginx in front (deploy/nginx/switchboard.conf, one upstream
// `server` line per port). They share Redis and forward sessions to each
// other, so nginx needs no sticky sessions.
//
// Settings come from the environment (SWITCHBOARD_*; see docs/operations.md).
// Keep secrets out of this file: export SWITCHBOARD_JWT_SECRET (and
// SWITCHBOARD_REDIS_URL) in the shell that runs `pm2 start`, or use a
// systemd EnvironmentFile for the PM2 daemon.

"use strict";

const GATEWAY_BIN = process.env.SWITCHBOARD_GATEWAY_BIN || "/usr/local/bin/switchboard-gateway";
const GATEWAY_PORTS = (process.env.SWITCHBOARD_GATEWAY_PORTS || "3002,3003")
  .split(",")
  .map((p) => Number.parseInt(p.trim(), 10))
  .filter((p) => Number.isInteger(p) && p > 0);
// The address OTHER hosts' gateways use to reach this host; 127.0.0.1 is only
// right when every gateway runs on this one host.
const HOST_IP = process.env.SWITCHBOARD_HOST_IP || "127.0.0.1";
const REDIS_URL = process.env.SWITCHBOARD_REDIS_URL || "redis://127.0.0.1:6379";

const gateways = GATEWAY_PORTS.map((port) => ({
  name: `switchboard-gateway-${port}`,
  script: GATEWAY_BIN,
  args: "run",
  interpreter: "none",
  exec_mode: "fork",
  instances: 1,
  autorestart: true,
  // Exit code 2 is a configuration error: restarting will not fix it.
  stop_exit_codes: [2],
  max_restarts: 10,
  min_uptime: "5s",
  restart_delay: 2000,
  // PM2 sends SIGINT, then SIGKILL after kill_timeout. The gateway drains on
  // SIGINT like on SIGTERM and exits within server.shutdown_deadline_ms
  // (10 s by default), so give it longer than that.
  kill_timeout: 15000,
  merge_logs: true,
  time: true,
  env: {
    SWITCHBOARD_LISTEN: `0.0.0.0:${port}`,
    SWITCHBOARD_ADVERTISE_ADDR: `${HOST_IP}:${port}`,
    SWITCHBOARD_REDIS_URL: REDIS_URL,
    // nginx on this host; X-Forwarded-For is believed from it only.
    SWITCHBOARD_SERVER__TRUSTED_PROXIES: "127.0.0.1,::1",
    SWITCHBOARD_SERVER__SHUTDOWN_DEADLINE_MS: "10000",
    SWITCHBOARD_LOG_FORMAT: "text",
  },
  env_production: {
    SWITCHBOARD_LOG_FORMAT: "json",
  },
}));

module.exports = {
  apps: [
    {
      // Your Node HTTP API (port 3001, behind nginx's /api/). It publishes to
      // the gateways through Redis with @socket.io/redis-emitter (or the
      // `switchboard publish` CLI); it needs no socket.io server itself.
      name: "api",
      script: "./server.js",
      cwd: process.env.API_DIR || "/srv/api",
      exec_mode: "cluster",
      instances: "max",
      kill_timeout: 5000,
      env: {
        NODE_ENV: "development",
        PORT: "3001",
        SWITCHBOARD_REDIS_URL: REDIS_URL,
      },
      env_production: {
        NODE_ENV: "production",
      },
    },
    ...gateways,
  ],
};
