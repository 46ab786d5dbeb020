// YAML request bodies (a job spec may be sent as YAML). The yaml library composes documents recursively, and a
// deeply nested document ('{' or '- ' repeated some ten thousand times, a few kilobytes) exhausts the stack inside
// V8's regular-expression compiler, which is not a catchable RangeError but a fatal "out of memory" that kills the
// whole server (found by test/fuzz). So the nesting is measured first, on the lexer's tokens (no recursion), and a
// document nested deeper than any job spec needs is refused with 400 before it is parsed.
import YAML, { CST, Lexer } from 'yaml';
import { HttpError } from './httpError.js';

/** Flow collections ([ ] and { }) inside one another. */
export const MAX_YAML_FLOW_DEPTH = 64;
/** Indentation plus block indicators ("- ", "? ") on one line: an upper bound of the block nesting there. */
export const MAX_YAML_BLOCK_DEPTH = 256;

/** Why `text` is nested too deeply to parse safely, or undefined when it is fine. */
export function yamlNestingProblem(text: string): string | undefined {
  let flow = 0;
  let indent = 0;
  let indicators = 0;
  let lineStart = true;
  let scalarNext = false;
  let line = 1;
  for (const token of new Lexer().lex(text)) {
    if (scalarNext) {
      // The content of a plain, quoted or block scalar: text, however it is indented. A block scalar's content
      // ends with its last newline, so the next token starts a line.
      scalarNext = false;
      for (let i = token.indexOf('\n'); i >= 0; i = token.indexOf('\n', i + 1)) line++;
      lineStart = token.endsWith('\n');
      if (lineStart) {
        indent = 0;
        indicators = 0;
      }
      continue;
    }
    if (token === CST.SCALAR) {
      scalarNext = true;
      continue;
    }
    switch (CST.tokenType(token)) {
      case 'newline':
        line++;
        lineStart = true;
        indent = 0;
        indicators = 0;
        continue;
      case 'space':
        if (lineStart) indent = token.length;
        break;
      case 'seq-item-ind':
      case 'explicit-key-ind':
        indicators++;
        break;
      case 'flow-map-start':
      case 'flow-seq-start':
        if (++flow > MAX_YAML_FLOW_DEPTH)
          return `flow collections ([ ] or { }) are nested more than ${MAX_YAML_FLOW_DEPTH} deep (line ${line})`;
        break;
      case 'flow-map-end':
      case 'flow-seq-end':
        flow = Math.max(0, flow - 1);
        break;
      default:
        break;
    }
    lineStart = false;
    if (indent + indicators > MAX_YAML_BLOCK_DEPTH) {
      return `line ${line} is indented or nested more than ${MAX_YAML_BLOCK_DEPTH} levels deep`;
    }
  }
  return undefined;
}

/** Parses a YAML request body; 400 with the reason when it is not valid YAML or nested too deeply. */
export function parseYamlBody(text: string): unknown {
  const problem = yamlNestingProblem(text);
  if (problem) throw new HttpError(400, `body is not accepted as YAML: ${problem}; no job spec needs that`);
  try {
    // logLevel 'error': syntax errors throw, warnings are not printed to the server's stderr.
    return YAML.parse(text, { logLevel: 'error' });
  } catch (err) {
    throw new HttpError(400, `body is not valid YAML: ${(err as Error).message}`);
  }
}
