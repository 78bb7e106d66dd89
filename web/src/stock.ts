// A server stream kept open: when it drops (a network blip, Envoy's idle
// timeout, a service restart) it is opened again after a short, growing pause.

export type StreamState = "connecting" | "live" | "reconnecting";

export interface FollowOptions<T> {
  /** Opens the stream; called again after every drop. */
  readonly open: (signal: AbortSignal) => AsyncIterable<T>;
  readonly onMessage: (message: T) => void;
  readonly onState?: (state: StreamState) => void;
  /** Stops following for good. */
  readonly signal: AbortSignal;
  /** Pauses before each reopening, in ms; the last one repeats. */
  readonly delays?: readonly number[];
}

export const RECONNECT_DELAYS_MS = [250, 500, 1000, 2000, 5000];

export async function follow<T>(options: FollowOptions<T>): Promise<void> {
  const { open, onMessage, onState, signal } = options;
  const delays = options.delays ?? RECONNECT_DELAYS_MS;
  let failures = 0;
  onState?.("connecting");
  while (!signal.aborted) {
    try {
      for await (const message of open(signal)) {
        failures = 0;
        onState?.("live");
        onMessage(message);
      }
    } catch {
      // Dropped: reopen below (unless we were told to stop).
    }
    if (signal.aborted) return;
    onState?.("reconnecting");
    await pause(delays[Math.min(failures, delays.length - 1)], signal);
    failures++;
  }
}

function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}
