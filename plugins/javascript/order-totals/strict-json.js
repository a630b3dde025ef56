// Typed JSON decoding that accepts and rejects exactly what the Rust plugins' serde_json
// does, with the same error messages, so this plugin's effects match the Rust version's.
//
// Why not JSON.parse: it turns 2, 2.0 and 2e0 into the same number and rounds integers
// beyond 2^53, where serde_json rejects a float for an i64 and keeps 64-bit integers exact.
// Here integers are BigInts, a value of the wrong JSON type is an error, and errors read like
// serde_json's ("invalid type: string \"2\", expected i64 at line 1 column 52").
//
//   decode(text, struct('Line', [['quantity', i64], ['unit_price_cents', i64]]))
//
// Speed: this byte-by-byte reader runs in SpiderMonkey's interpreter (about 0.5 ms for a small
// payload), so decode() first tries the engine's native JSON.parse and keeps its result when
// it is provably the same: the text has no number with a fraction, an exponent or 16+ digits
// (so every number is an integer JSON.parse reads exactly) and the value fits the type. Else,
// and for every error, the reader below decides. (JSON.parse keeps the last of repeated keys
// where serde_json fails; the host re-serializes payloads, so their keys are unique.)
//
// Known differences, in error texts only: of the non-ASCII characters Rust's `{:?}` escapes in
// a string it did not expect, only the common ones are escaped here (see RUST_ESCAPED); and
// serde_json's default float parser may land one unit in the last place away from the exact
// value JavaScript finds, so a float in a message may print differently in its last digit.

const U64_MAX = (1n << 64n) - 1n;
const I64_MAX = (1n << 63n) - 1n;
const I64_MIN = -(1n << 63n);

/** A payload or state value that does not decode; `message` reads like serde_json's. */
export class DecodeError extends Error {
  constructor(message, position) {
    super(position === undefined ? message : `${message} at ${position}`);
    this.positioned = position !== undefined;
  }
}

// Each type reads itself from the Reader (`deserialize`), and converts a JSON.parse result
// (`fromParsed`), returning MISMATCH when the reader must decide.
const MISMATCH = Symbol('mismatch');

const isInteger = (v) => Number.isInteger(v) && !Object.is(v, -0);

/** A signed 64-bit integer, as a BigInt. */
export const i64 = {
  expecting: 'i64',
  deserialize: (r) => integer(r, i64),
  fromParsed: (v) => (isInteger(v) ? BigInt(v) : MISMATCH),
};

/** An unsigned 64-bit integer, as a BigInt. */
export const u64 = {
  expecting: 'u64',
  deserialize: (r) => integer(r, u64),
  fromParsed: (v) => (isInteger(v) && v >= 0 ? BigInt(v) : MISMATCH),
};

/** A string. */
export const string = {
  expecting: 'a string',
  deserialize(r) {
    if (r.peek() !== QUOTE) throw r.invalidType(string);
    r.index++;
    return r.parseString();
  },
  fromParsed: (v) => (typeof v === 'string' ? v : MISMATCH),
};

/** A JSON array of `element`s, as an Array. */
export function vec(element) {
  const type = {
    expecting: 'a sequence',
    deserialize(r) {
      if (r.peek() !== OPEN_BRACKET) throw r.invalidType(type);
      r.index++;
      return r.finishSeq(() => {
        const items = [];
        while (r.hasNextElement(items.length === 0)) items.push(element.deserialize(r));
        return items;
      });
    },
    fromParsed(v) {
      if (!Array.isArray(v)) return MISMATCH;
      const items = v.map((item) => element.fromParsed(item));
      return items.includes(MISMATCH) ? MISMATCH : items;
    },
  };
  return type;
}

/**
 * A struct with `fields` ([name, type] pairs, in declaration order), as an object. Like a
 * serde-derived struct: unknown keys are skipped, a missing or repeated field is an error,
 * and a JSON array of the field values in order is accepted too.
 */
export function struct(name, fields) {
  const type = {
    expecting: `struct ${name}`,
    deserialize(r) {
      const peek = r.peek();
      if (peek === OPEN_BRACKET) {
        r.index++;
        return r.finishSeq(() => fromArray(r, name, fields));
      }
      if (peek !== OPEN_BRACE) throw r.invalidType(type);
      r.index++;
      return r.finishMap(() => fromObject(r, fields));
    },
    fromParsed(v) {
      if (v === null || typeof v !== 'object' || Array.isArray(v)) return MISMATCH;
      const value = {};
      for (const [field, type] of fields) {
        value[field] = Object.hasOwn(v, field) ? type.fromParsed(v[field]) : MISMATCH;
        if (value[field] === MISMATCH) return MISMATCH;
      }
      return value;
    },
  };
  return type;
}

// A number JSON.parse may not read exactly (or that serde_json reads as a float), or an
// escaped surrogate (JSON.parse accepts a lone one; serde_json does not).
const NOT_FOR_JSON_PARSE = /[0-9][.eE]|[0-9]{16}|\\u[dD][89a-fA-F]/;

/** Decodes the whole of `text` as `type`; throws a DecodeError. */
export function decode(text, type) {
  if (!NOT_FOR_JSON_PARSE.test(text)) {
    let parsed = MISMATCH;
    try {
      parsed = JSON.parse(text);
    } catch {
      // The reader reports it.
    }
    const value = parsed === MISMATCH ? MISMATCH : type.fromParsed(parsed);
    if (value !== MISMATCH) return value;
  }
  return decodeStrictly(text, type);
}

/** decode() without the JSON.parse fast path. */
export function decodeStrictly(text, type) {
  const r = new Reader(text);
  const value = type.deserialize(r);
  if (r.peek() !== undefined) throw r.peekError('trailing characters');
  return value;
}

function fromObject(r, fields) {
  const value = {};
  for (let first = true; r.hasNextKey(first); first = false) {
    r.index++;
    const key = r.parseString();
    const field = fields.find(([name]) => name === key);
    if (field === undefined) {
      r.parseColon();
      r.ignoreValue();
      continue;
    }
    if (Object.hasOwn(value, key)) throw new DecodeError(`duplicate field \`${key}\``);
    r.parseColon();
    value[key] = field[1].deserialize(r);
  }
  for (const [name] of fields) {
    if (!Object.hasOwn(value, name)) throw new DecodeError(`missing field \`${name}\``);
  }
  // Declaration order, whatever the order of the keys.
  return Object.fromEntries(fields.map(([name]) => [name, value[name]]));
}

function fromArray(r, name, fields) {
  const value = {};
  fields.forEach(([field, type], index) => {
    if (!r.hasNextElement(index === 0)) {
      const expected = `struct ${name} with ${fields.length} element${fields.length === 1 ? '' : 's'}`;
      throw new DecodeError(`invalid length ${index}, expected ${expected}`);
    }
    value[field] = type.deserialize(r);
  });
  return value;
}

function integer(r, type) {
  const start = r.peek();
  if (start !== MINUS && !isDigit(start)) throw r.invalidType(type);
  const number = r.parseNumber();
  const error = checkInteger(number, type);
  if (error) throw r.fixPosition(new DecodeError(error));
  return number.value;
}

/** Why `number` is not a value of `type` (i64 or u64), or undefined when it is. */
function checkInteger(number, type) {
  if (number.kind === 'float') {
    return `invalid type: ${unexpected(number)}, expected ${type.expecting}`;
  }
  const fits = type === i64 ? number.value <= I64_MAX : number.value >= 0n;
  return fits ? undefined : `invalid value: ${unexpected(number)}, expected ${type.expecting}`;
}

/** How serde_json names a value it did not expect. */
function unexpected(number) {
  return number.kind === 'float' ? `floating point \`${formatFloat(number.value)}\`` : `integer \`${number.value}\``;
}

const QUOTE = 0x22;
const MINUS = 0x2d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const COMMA = 0x2c;
const COLON = 0x3a;

const isDigit = (b) => b >= 0x30 && b <= 0x39;
const isWhitespace = (b) => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A cursor over the UTF-8 bytes of a JSON text; positions are serde_json's (byte columns). */
class Reader {
  constructor(text) {
    this.bytes = encoder.encode(text);
    this.index = 0;
  }

  /** The next byte after whitespace, not consumed; undefined at the end. */
  peek() {
    while (isWhitespace(this.bytes[this.index])) this.index++;
    return this.bytes[this.index];
  }

  position(index) {
    let line = 1;
    let lineStart = 0;
    for (let i = 0; i < index; i++) {
      if (this.bytes[i] === 0x0a) {
        line++;
        lineStart = i + 1;
      }
    }
    return `line ${line} column ${index - lineStart}`;
  }

  /** An error at the current position (what serde_json calls `error`). */
  error(message) {
    return new DecodeError(message, this.position(this.index));
  }

  /** An error about the byte just peeked (serde_json's `peek_error`). */
  peekError(message) {
    return new DecodeError(message, this.position(Math.min(this.bytes.length, this.index + 1)));
  }

  /** Gives a position-less error (a type mismatch, a missing field) the current position. */
  fixPosition(error) {
    return error instanceof DecodeError && !error.positioned ? this.error(error.message) : error;
  }

  /** serde_json's `peek_invalid_type`: consumes a scalar to name it in the message. */
  invalidType(type) {
    const peek = this.peek();
    let what;
    if (peek === 0x6e) {
      this.parseIdent('null');
      what = 'null';
    } else if (peek === 0x74 || peek === 0x66) {
      const word = peek === 0x74 ? 'true' : 'false';
      this.parseIdent(word);
      what = `boolean \`${word}\``;
    } else if (peek === MINUS || isDigit(peek)) {
      what = unexpected(this.parseNumber());
    } else if (peek === QUOTE) {
      this.index++;
      what = `string ${rustDebug(this.parseString())}`;
    } else if (peek === OPEN_BRACKET) {
      what = 'sequence';
    } else if (peek === OPEN_BRACE) {
      what = 'map';
    } else {
      return this.peekError(peek === undefined ? 'EOF while parsing a value' : 'expected value');
    }
    return this.error(`invalid type: ${what}, expected ${type.expecting}`);
  }

  parseIdent(word) {
    for (let i = 0; i < word.length; i++) {
      if (this.bytes[this.index] !== word.charCodeAt(i)) throw this.peekError('expected ident');
      this.index++;
    }
  }

  /**
   * A number token as serde_json classifies it: {kind: 'int', value: BigInt} for integers
   * in -2^63..2^64-1, else {kind: 'float', value: Number} (fractions, exponents, `-0`, and
   * integers too large for 64 bits).
   */
  parseNumber() {
    const start = this.index;
    const negative = this.bytes[this.index] === MINUS;
    if (negative) this.index++;
    const digitsStart = this.index;
    while (isDigit(this.bytes[this.index])) this.index++;
    if (this.index === digitsStart) throw this.error('invalid number');
    if (this.bytes[digitsStart] === 0x30 && this.index - digitsStart > 1) throw this.error('invalid number');
    let float = false;
    if (this.bytes[this.index] === 0x2e) {
      float = true;
      this.index++;
      this.skipDigits();
    }
    if (this.bytes[this.index] === 0x65 || this.bytes[this.index] === 0x45) {
      float = true;
      this.index++;
      if (this.bytes[this.index] === 0x2b || this.bytes[this.index] === MINUS) this.index++;
      this.skipDigits();
    }
    const text = decoder.decode(this.bytes.subarray(start, this.index));
    if (!float) {
      const value = BigInt(text);
      const zero = negative && value === 0n;
      if (!zero && value <= U64_MAX && value >= I64_MIN) return { kind: 'int', value };
    }
    return { kind: 'float', value: Number(text) };
  }

  skipDigits() {
    const start = this.index;
    while (isDigit(this.bytes[this.index])) this.index++;
    if (this.index === start) throw this.peekError('invalid number');
  }

  /** The rest of a string whose opening quote was consumed. */
  parseString() {
    let result = '';
    let chunk = this.index;
    for (;;) {
      const b = this.bytes[this.index];
      if (b === undefined) throw this.error('EOF while parsing a string');
      if (b === QUOTE || b === 0x5c) {
        result += decoder.decode(this.bytes.subarray(chunk, this.index));
        this.index++;
        if (b === QUOTE) return result;
        result += this.parseEscape();
        chunk = this.index;
      } else if (b < 0x20) {
        this.index++;
        throw this.error('control character (\\u0000-\\u001F) found while parsing a string');
      } else {
        this.index++;
      }
    }
  }

  parseEscape() {
    const b = this.bytes[this.index++];
    const simple = { 0x22: '"', 0x5c: '\\', 0x2f: '/', 0x62: '\b', 0x66: '\f', 0x6e: '\n', 0x72: '\r', 0x74: '\t' };
    if (b in simple) return simple[b];
    if (b !== 0x75) throw this.error('invalid escape');
    const unit = this.parseHex4();
    if (unit >= 0xd800 && unit <= 0xdbff && this.bytes[this.index] === 0x5c && this.bytes[this.index + 1] === 0x75) {
      const save = this.index;
      this.index += 2;
      const low = this.parseHex4();
      if (low >= 0xdc00 && low <= 0xdfff) return String.fromCharCode(unit, low);
      this.index = save;
    }
    if (unit >= 0xd800 && unit <= 0xdfff) throw this.error('lone leading surrogate in hex escape');
    return String.fromCharCode(unit);
  }

  parseHex4() {
    const text = decoder.decode(this.bytes.subarray(this.index, this.index + 4));
    if (!/^[0-9a-fA-F]{4}$/.test(text)) throw this.error('invalid escape');
    this.index += 4;
    return parseInt(text, 16);
  }

  parseColon() {
    if (this.peek() !== COLON) throw this.peekError('expected `:`');
    this.index++;
  }

  /** serde_json's SeqAccess: whether another element follows (consumes its comma). */
  hasNextElement(first) {
    const peek = this.peek();
    if (peek === CLOSE_BRACKET) return false;
    if (first && peek !== undefined) return true;
    if (peek === COMMA) {
      this.index++;
      if (this.peek() === CLOSE_BRACKET) throw this.peekError('trailing comma');
      return true;
    }
    throw this.peekError(peek === undefined ? 'EOF while parsing a list' : 'expected `,` or `]`');
  }

  /** serde_json's MapAccess: whether another key follows (consumes its comma, not its quote). */
  hasNextKey(first) {
    const peek = this.peek();
    if (peek === CLOSE_BRACE) return false;
    if (peek === undefined) throw this.peekError('EOF while parsing an object');
    if (!first) {
      if (peek !== COMMA) throw this.peekError('expected `,` or `}`');
      this.index++;
      const next = this.peek();
      if (next === CLOSE_BRACE) throw this.peekError('trailing comma');
      if (next === undefined) throw this.peekError('EOF while parsing a value');
    }
    if (this.peek() !== QUOTE) throw this.peekError('key must be a string');
    return true;
  }

  /** Runs `visit` after an opening `[`, then consumes the `]`, with serde_json's error order. */
  finishSeq(visit) {
    return this.finish(visit, () => {
      const peek = this.peek();
      if (peek === CLOSE_BRACKET) return void this.index++;
      if (peek === COMMA) {
        this.index++;
        throw this.peekError(this.peek() === CLOSE_BRACKET ? 'trailing comma' : 'trailing characters');
      }
      throw this.peekError(peek === undefined ? 'EOF while parsing a list' : 'trailing characters');
    });
  }

  /** Runs `visit` after an opening `{`, then consumes the `}`, with serde_json's error order. */
  finishMap(visit) {
    return this.finish(visit, () => {
      const peek = this.peek();
      if (peek === CLOSE_BRACE) return void this.index++;
      if (peek === COMMA) throw this.peekError('trailing comma');
      throw this.peekError(peek === undefined ? 'EOF while parsing an object' : 'trailing characters');
    });
  }

  // The closing bracket is read even when `visit` failed, and a position-less error from
  // `visit` is then placed after it: that is where serde_json reports a missing field.
  finish(visit, close) {
    let value;
    let visitError;
    try {
      value = visit();
    } catch (error) {
      visitError = error;
    }
    try {
      close();
    } catch (closeError) {
      if (visitError === undefined) throw closeError;
    }
    if (visitError !== undefined) throw this.fixPosition(visitError);
    return value;
  }

  /** Skips any JSON value (the value of a field the type does not name). */
  ignoreValue() {
    const peek = this.peek();
    if (peek === QUOTE) {
      this.index++;
      this.parseString();
    } else if (peek === MINUS || isDigit(peek)) {
      this.parseNumber();
    } else if (peek === 0x6e) {
      this.parseIdent('null');
    } else if (peek === 0x74) {
      this.parseIdent('true');
    } else if (peek === 0x66) {
      this.parseIdent('false');
    } else if (peek === OPEN_BRACKET) {
      this.index++;
      this.finishSeq(() => {
        for (let first = true; this.hasNextElement(first); first = false) this.ignoreValue();
      });
    } else if (peek === OPEN_BRACE) {
      this.index++;
      this.finishMap(() => {
        for (let first = true; this.hasNextKey(first); first = false) {
          this.index++;
          this.parseString();
          this.parseColon();
          this.ignoreValue();
        }
      });
    } else {
      throw this.peekError(peek === undefined ? 'EOF while parsing a value' : 'expected value');
    }
  }
}

/**
 * A float as serde_json writes it (the zmij crate): shortest round-trip digits, plain
 * notation with a `.0` for exponents -5..=15, else `1.5e+20` / `5e-7`.
 */
export function formatFloat(x) {
  if (Number.isNaN(x)) return 'NaN';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const sign = x < 0 ? '-' : '';
  const [mantissa, exponentText] = Math.abs(x).toExponential().split('e');
  const digits = mantissa.replace('.', '');
  const exponent = Number(exponentText);
  if (exponent >= -5 && exponent <= 15) {
    if (digits.length - 1 <= exponent) return `${sign}${digits.padEnd(exponent + 1, '0')}.0`;
    if (exponent >= 0) return `${sign}${digits.slice(0, exponent + 1)}.${digits.slice(exponent + 1)}`;
    return `${sign}0.${'0'.repeat(-exponent - 1)}${digits}`;
  }
  const significand = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
  return `${sign}${significand}e${exponent < 0 ? '-' : '+'}${Math.abs(exponent)}`;
}

// Rust's `{:?}` escapes, besides \t \r \n \\ \" and \0, every character that is not printable
// (general categories C* and Z* other than the space) or that extends a grapheme. The engine
// has no Unicode property escapes (\p{...}), so this lists the common ones: controls, spaces
// and separators, format characters, private use, and the generic combining-mark blocks.
const RUST_ESCAPED = new RegExp(
  '[\\u{0}-\\u{1f}\\u{7f}-\\u{a0}\\u{ad}\\u{300}-\\u{36f}\\u{600}-\\u{605}\\u{61c}\\u{6dd}\\u{70f}' +
    '\\u{1680}\\u{180e}\\u{1ab0}-\\u{1aff}\\u{1dc0}-\\u{1dff}\\u{2000}-\\u{200f}\\u{2028}-\\u{202f}' +
    '\\u{205f}-\\u{206f}\\u{20d0}-\\u{20ff}\\u{3000}\\u{e000}-\\u{f8ff}\\u{fe00}-\\u{fe0f}' +
    '\\u{fe20}-\\u{fe2f}\\u{feff}\\u{fff9}-\\u{fffb}\\u{1f3fb}-\\u{1f3ff}\\u{e0000}-\\u{10ffff}]',
  'u',
);

/** A string as Rust's `{:?}` prints it: "a\"b\u{7f}". */
export function rustDebug(s) {
  let out = '"';
  for (const c of s) {
    const named = { '\t': '\\t', '\r': '\\r', '\n': '\\n', '\\': '\\\\', '"': '\\"', '\0': '\\0' }[c];
    if (named !== undefined) out += named;
    else if (c !== ' ' && RUST_ESCAPED.test(c)) out += `\\u{${c.codePointAt(0).toString(16)}}`;
    else out += c;
  }
  return `${out}"`;
}
