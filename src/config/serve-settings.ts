// The settings of a serving skiff, parsed once for every runtime: `skiff serve`'s flags (their names
// without "--") and a Worker's vars (MAX_LAYER_SIZE → max-layer-size) arrive as the same plain
// string map. The defaults are written here only; a runtime may pass its own (the Worker converts
// in steps by default and waits less, docs/deploy.md). The converter owns the default limits on
// expanded size and entries (src/convert/layer.ts), and the config the default tag TTL.
import { parseSize } from "../util/size.ts";

/** A setting's value is wrong. Each front end spells the settings it names its own way. */
export class SettingsError extends Error {
  constructor(
    readonly setting: string,
    private readonly text: (name: (setting: string) => string) => string,
  ) {
    super(text((s) => s));
  }

  /** The message with every setting named as `name` spells it (`--max-layer-size`, `MAX_LAYER_SIZE`). */
  spelled(name: (setting: string) => string): string {
    return this.text(name);
  }
}

export interface ServeSettings {
  /** Layers larger than this (compressed) are not converted. */
  maxLayerBytes: number;
  /** Layers that expand past this are refused while converting (default: the converter's, 64 GiB). */
  maxExpandedBytes?: number;
  /** Layers with more tar entries than this are refused (default: the converter's, 1,000,000). */
  maxLayerEntries?: number;
  /** How long a bootstrap request waits for a conversion before answering 202. */
  convertWaitSeconds: number;
  /** Layer content one request converts before the conversion pauses until the next (no limit when absent). */
  convertStepBytes?: number;
  /** Platform of bootstraps whose request names none. */
  defaultPlatform: string;
  /** Tag TTL of upstreams that set none (default: the config's, 60 s); it goes into the config. */
  tagTtlSeconds?: number;
  /** Whether the learned-prefetch route takes and serves nodes' reports; when not given, the config file's `learnedPrefetch`, else on. */
  learnedPrefetch?: boolean;
  /** Whether an image asked for with a chunk codec is converted with `none` first and answered with that meanwhile (on when absent). */
  noneFirst?: boolean;
}

/** The settings the app takes; the tag TTL is the config's. */
export type AppSettings = Omit<ServeSettings, "tagTtlSeconds">;

export const SETTING_NAMES = ["max-layer-size", "max-expanded-size", "max-layer-entries", "convert-wait", "convert-step", "platform", "tag-ttl", "learned-prefetch", "none-first"] as const;
export type SettingName = (typeof SETTING_NAMES)[number];
export type SettingValues = Partial<Record<SettingName, string>>;

const ON = new Set(["on", "true", "yes", "1"]);
const OFF = new Set(["off", "false", "no", "0"]);

/** skiff's own defaults, as `skiff serve --help` also shows them. */
export const SERVE_DEFAULTS = { "max-layer-size": "8g", "convert-wait": "30", platform: "linux/amd64" } as const satisfies SettingValues;

/** The settings `values` give, over `defaults` (a runtime's own), over skiff's. */
export function parseServeSettings(values: SettingValues, defaults: SettingValues = {}): ServeSettings {
  const text = (name: SettingName) => values[name] ?? defaults[name] ?? (SERVE_DEFAULTS as SettingValues)[name];
  const size = (name: SettingName, min: 0 | 1) => {
    const t = text(name);
    const bytes = t === undefined ? undefined : parseSize(t);
    if (bytes === null || (bytes !== undefined && bytes < min)) {
      throw new SettingsError(name, (n) => `${n(name)} must be a size${min ? " above 0" : ""} like 500m or 8g, got ${JSON.stringify(t)}`);
    }
    return bytes;
  };
  const whole = (name: SettingName, min: number, max = Number.MAX_SAFE_INTEGER) => {
    const t = text(name);
    if (t === undefined) return undefined;
    if (!/^\d+$/.test(t.trim())) throw new SettingsError(name, (n) => `${n(name)} must be a whole number, got ${JSON.stringify(t)}`);
    const value = Number(t.trim());
    if (value < min || value > max) throw new SettingsError(name, (n) => `${n(name)} must be between ${min} and ${max}, got ${value}`);
    return value;
  };
  const onOff = (name: SettingName) => {
    const t = text(name)?.trim().toLowerCase();
    if (t === undefined) return undefined;
    if (ON.has(t)) return true;
    if (OFF.has(t)) return false;
    throw new SettingsError(name, (n) => `${n(name)} must be on or off, got ${JSON.stringify(text(name))}`);
  };
  return {
    maxLayerBytes: size("max-layer-size", 0)!,
    maxExpandedBytes: size("max-expanded-size", 1),
    maxLayerEntries: whole("max-layer-entries", 1),
    convertWaitSeconds: whole("convert-wait", 0, 3600)!,
    convertStepBytes: size("convert-step", 1),
    defaultPlatform: text("platform")!,
    tagTtlSeconds: whole("tag-ttl", 0),
    learnedPrefetch: onOff("learned-prefetch"),
    noneFirst: onOff("none-first"),
  };
}

/** The defaults alone, for an app built without settings (tests). */
export const DEFAULT_SETTINGS: Readonly<ServeSettings> = parseServeSettings({});
