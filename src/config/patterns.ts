// Repository patterns in access rules: a repository id (`PREFIX/NAME`) where `*` stands for any run
// of characters, `/` included: `corp/team-a/*`, `docker.io/*`, `*`.

const PATTERN = /^[a-z0-9._\-/*]+$/;

export function compileRepositoryPattern(pattern: string): RegExp {
  if (!PATTERN.test(pattern)) throw new Error(`a repository pattern holds lowercase letters, digits, . _ - / and *, got ${JSON.stringify(pattern)}`);
  const source = pattern
    .split("*")
    .map((part) => part.replace(/[.\-/]/g, "\\$&"))
    .join(".*");
  return new RegExp(`^${source}$`);
}
