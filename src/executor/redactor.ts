// Replaces secret values before text leaves the executor. (Encoded forms and values split across writes come with
// the secrets feature; the executor's own token and each job's token are covered from the start.)
export class Redactor {
  private readonly values: { value: string; replacement: string }[] = [];

  add(value: string, replacement: string): this {
    if (value.length >= 4) {
      this.values.push({ value, replacement });
      this.values.sort((a, b) => b.value.length - a.value.length);
    }
    return this;
  }

  redact(text: string): string {
    let out = text;
    for (const { value, replacement } of this.values) if (out.includes(value)) out = out.split(value).join(replacement);
    return out;
  }
}
