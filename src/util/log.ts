// One-line JSON logs on stderr, so stdout stays free for the listening line
// and command output. Level from KV_ROUTER_LOG (debug|info|warn|error).
const LEVELS = { debug: 10, info: 20, warn: 30, error: 40 } as const;
type Level = keyof typeof LEVELS;

export const LOG_LEVELS = Object.keys(LEVELS) as Level[];

/** KV_ROUTER_LOG as a level (any case); undefined when it names none. Unset means info. */
export function parseLogLevel(value: string | undefined): Level | undefined {
  if (value === undefined || value === "") return "info";
  const v = value.trim().toLowerCase();
  return (LOG_LEVELS as string[]).includes(v) ? (v as Level) : undefined;
}

/** The level in force; an unreadable KV_ROUTER_LOG (the command line refuses it at start) means info. */
export const logLevel = (): Level => parseLogLevel(process.env.KV_ROUTER_LOG) ?? "info";

const threshold = LEVELS[logLevel()];

function write(level: Level, msg: string, fields: Record<string, unknown>): void {
  if (LEVELS[level] < threshold) return;
  const line = JSON.stringify({ t: new Date().toISOString(), level, msg, ...fields }, (_k, v) =>
    typeof v === "bigint" ? v.toString() : v,
  );
  process.stderr.write(line + "\n");
}

export const log = {
  debug: (msg: string, fields: Record<string, unknown> = {}) => write("debug", msg, fields),
  info: (msg: string, fields: Record<string, unknown> = {}) => write("info", msg, fields),
  warn: (msg: string, fields: Record<string, unknown> = {}) => write("warn", msg, fields),
  error: (msg: string, fields: Record<string, unknown> = {}) => write("error", msg, fields),
};
