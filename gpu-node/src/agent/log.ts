/**
 * Structured logs: one JSON object per line on stderr (stdout is kept for the CLI's machine-readable
 * lines, such as `{"event":"listening",…}`).
 */

export type LogLevel = "debug" | "info" | "warn" | "error";
export type LogRecord = { level?: LogLevel; msg: string } & Record<string, unknown>;
export type Logger = (record: LogRecord) => void;

export function jsonLogger(write: (line: string) => void = (line) => process.stderr.write(line)): Logger {
  return function log(record) {
    write(`${JSON.stringify({ ts: new Date().toISOString(), level: "info", ...record })}\n`);
  };
}

export const silentLogger: Logger = () => {};
