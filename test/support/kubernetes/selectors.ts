// Label and field selectors in the string syntax of k8s.io/apimachinery/pkg/labels and pkg/fields.
import { badRequest } from './status.js';
import type { KubeObject } from './util.js';

export type Matcher = (values: Record<string, string>) => boolean;

type Requirement =
  | { op: 'exists' | 'notexists'; key: string }
  | { op: 'in' | 'notin'; key: string; values: string[] }
  | { op: 'gt' | 'lt'; key: string; value: number };

const everything: Matcher = () => true;

/** Parses `a=b,c!=d,e in (x,y),f notin (z),g,!h,i>3` into a matcher; a parse error is a 400, as in the apiserver. */
export function parseLabelSelector(text: string | undefined): Matcher {
  if (!text || text.trim() === '') return everything;
  const requirements = new LabelSelectorParser(text).parse();
  return (labels) => requirements.every((r) => matchesRequirement(r, labels));
}

function matchesRequirement(r: Requirement, labels: Record<string, string>): boolean {
  const has = Object.prototype.hasOwnProperty.call(labels, r.key);
  const value = labels[r.key];
  switch (r.op) {
    case 'exists':
      return has;
    case 'notexists':
      return !has;
    case 'in':
      return has && r.values.includes(value);
    case 'notin':
      return !has || !r.values.includes(value);
    case 'gt':
    case 'lt': {
      if (!has || !/^-?\d+$/.test(value)) return false;
      return r.op === 'gt' ? Number(value) > r.value : Number(value) < r.value;
    }
  }
}

type Token = { kind: 'word' | 'op' | 'open' | 'close' | 'comma' | 'not' | 'end'; text: string };

class LabelSelectorParser {
  private tokens: Token[];
  private at = 0;

  constructor(private readonly text: string) {
    this.tokens = tokenize(text);
  }

  parse(): Requirement[] {
    const out: Requirement[] = [];
    for (;;) {
      out.push(this.requirement());
      const next = this.take();
      if (next.kind === 'end') return out;
      if (next.kind !== 'comma') this.fail(`found '${next.text}', expected: ',' or 'end of string'`);
    }
  }

  private requirement(): Requirement {
    let token = this.take();
    if (token.kind === 'not') {
      token = this.take();
      if (token.kind !== 'word') this.fail(`found '${token.text}', expected: identifier after '!'`);
      this.checkKey(token.text);
      return { op: 'notexists', key: token.text };
    }
    if (token.kind !== 'word') this.fail(`found '${token.text}', expected: !, identifier, or 'end of string'`);
    const key = token.text;
    this.checkKey(key);
    const next = this.peek();
    if (next.kind === 'comma' || next.kind === 'end') return { op: 'exists', key };
    const op = this.take();
    if (op.kind === 'op') {
      const valueToken = this.peek();
      const value = valueToken.kind === 'word' ? this.take().text : '';
      switch (op.text) {
        case '=':
        case '==':
          return { op: 'in', key, values: [value] };
        case '!=':
          return { op: 'notin', key, values: [value] };
        case '>':
        case '<':
          if (!/^-?\d+$/.test(value)) this.fail(`for 'Gt', 'Lt' operators, the value must be an integer`);
          return { op: op.text === '>' ? 'gt' : 'lt', key, value: Number(value) };
      }
    }
    if (op.kind === 'word' && (op.text === 'in' || op.text === 'notin')) {
      if (this.take().kind !== 'open') this.fail(`found '${op.text}', expected: '('`);
      const values: string[] = [];
      for (;;) {
        const t = this.take();
        if (t.kind === 'close') break;
        if (t.kind === 'word') {
          values.push(t.text);
          const sep = this.take();
          if (sep.kind === 'close') break;
          if (sep.kind !== 'comma') this.fail(`found '${sep.text}', expected: ',' or ')'`);
          continue;
        }
        if (t.kind === 'comma') {
          values.push('');
          continue;
        }
        this.fail(`found '${t.text}', expected: ',', ')' or identifier`);
      }
      return { op: op.text as 'in' | 'notin', key, values };
    }
    this.fail(`found '${op.text}', expected: in, notin, =, ==, !=, gt, lt`);
  }

  private checkKey(key: string): void {
    const slash = key.lastIndexOf('/');
    const name = slash === -1 ? key : key.slice(slash + 1);
    if (!/^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/.test(name) || name.length > 63) {
      this.fail(`key: Invalid value: "${key}": name part must consist of alphanumeric characters, '-', '_' or '.'`);
    }
  }

  private peek(): Token {
    return this.tokens[this.at] ?? { kind: 'end', text: '' };
  }

  private take(): Token {
    const t = this.peek();
    if (this.at < this.tokens.length) this.at++;
    return t;
  }

  private fail(detail: string): never {
    throw badRequest(`unable to parse requirement: ${detail} (in selector "${this.text}")`);
  }
}

function tokenize(text: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === ' ' || c === '\t') {
      i++;
    } else if (c === ',') {
      tokens.push({ kind: 'comma', text: c });
      i++;
    } else if (c === '(') {
      tokens.push({ kind: 'open', text: c });
      i++;
    } else if (c === ')') {
      tokens.push({ kind: 'close', text: c });
      i++;
    } else if (c === '!' && text[i + 1] === '=') {
      tokens.push({ kind: 'op', text: '!=' });
      i += 2;
    } else if (c === '!') {
      tokens.push({ kind: 'not', text: c });
      i++;
    } else if (c === '=' && text[i + 1] === '=') {
      tokens.push({ kind: 'op', text: '==' });
      i += 2;
    } else if (c === '=' || c === '>' || c === '<') {
      tokens.push({ kind: 'op', text: c });
      i++;
    } else {
      let j = i;
      while (j < text.length && !' \t,()!=<>'.includes(text[j])) j++;
      tokens.push({ kind: 'word', text: text.slice(i, j) });
      i = j;
    }
  }
  return tokens;
}

/** A LabelSelector object (matchLabels + matchExpressions), as in a Job's spec.selector. */
export function labelSelectorObjectMatcher(selector: KubeObject | undefined): Matcher {
  if (!selector) return () => false;
  const requirements: Requirement[] = [];
  for (const [key, value] of Object.entries((selector.matchLabels ?? {}) as Record<string, string>)) {
    requirements.push({ op: 'in', key, values: [value] });
  }
  for (const e of (selector.matchExpressions ?? []) as { key: string; operator: string; values?: string[] }[]) {
    const op = ({ In: 'in', NotIn: 'notin', Exists: 'exists', DoesNotExist: 'notexists' } as const)[e.operator as 'In'];
    if (op === 'in' || op === 'notin') requirements.push({ op, key: e.key, values: e.values ?? [] });
    else if (op) requirements.push({ op, key: e.key });
  }
  return (labels) => requirements.every((r) => matchesRequirement(r, labels));
}

/**
 * A field selector (`metadata.name=x,status.phase!=Running`) over the fields a resource supports. An unknown field
 * is a 400, as the apiserver answers.
 */
export function parseFieldSelector(text: string | undefined, supported: readonly string[]): Matcher {
  if (!text || text.trim() === '') return everything;
  const terms = text.split(',').map((term) => {
    const m = /^\s*([^!=\s]+)\s*(==|=|!=)\s*(.*?)\s*$/.exec(term);
    if (!m) throw badRequest(`invalid selector: '${text}'; can't understand '${term}'`);
    const [, field, op, value] = m;
    if (!supported.includes(field)) throw badRequest(`field label not supported: ${field}`);
    return { field, negate: op === '!=', value };
  });
  return (fields) => terms.every((t) => (fields[t.field] === t.value) !== t.negate);
}
