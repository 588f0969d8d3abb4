import { describe, expect, it } from "vitest";
import { type GroundingEvent, GroundingParser, type GroundingParserOptions, parseGrounding } from "./grounding";

const W = 1000;
const H = 500;

/** Feeds the pieces, returns the events with adjacent text merged (a split may cut text anywhere). */
function feed(pieces: readonly string[], options: Partial<GroundingParserOptions> = {}) {
  const p = new GroundingParser({ width: W, height: H, ...options });
  const events: GroundingEvent[] = [];
  for (const piece of pieces) events.push(...p.push(piece));
  events.push(...p.end());
  const merged: GroundingEvent[] = [];
  for (const e of events) {
    const last = merged.at(-1);
    if (e.type === "text" && last?.type === "text") merged[merged.length - 1] = { type: "text", text: last.text + e.text };
    else merged.push(e);
  }
  return { events: merged, boxes: p.boxes, malformed: p.malformed };
}

describe("GroundingParser", () => {
  it("parses a ref and its box into normalized and pixel coordinates", () => {
    const { events, boxes } = feed(["<ref>the dog</ref><box>(100,200),(300,400)</box>"]);
    expect(boxes).toEqual([{ label: "the dog", box: [100, 100, 300, 200], box_normalized: [100, 200, 300, 400] }]);
    expect(events).toEqual([
      { type: "text", text: "<ref>the dog</ref><box>(100,200),(300,400)</box>" },
      { type: "box", label: "the dog", box: [100, 100, 300, 200], box_normalized: [100, 200, 300, 400] },
    ]);
  });

  it("pixels are round(v / 1000 * size) of the image as given", () => {
    const { boxes } = parseGrounding("<box>(451,379),(731,806)</box>", 640, 427);
    expect(boxes[0].box).toEqual([289, 162, 468, 344]);
    expect(boxes[0].box_normalized).toEqual([451, 379, 731, 806]);
  });

  it("emits each box right after the text that closed it", () => {
    const p = new GroundingParser({ width: W, height: H });
    expect(p.push("A <ref>cat</ref><box>(1,2),(3,4)</bo")).toEqual([{ type: "text", text: "A <ref>cat</ref><box>(1,2),(3,4)</bo" }]);
    expect(p.push("x> and more")).toEqual([
      { type: "text", text: "x>" },
      { type: "box", label: "cat", box: [1, 1, 3, 2], box_normalized: [1, 2, 3, 4] },
      { type: "text", text: " and more" },
    ]);
    expect(p.end()).toEqual([]);
  });

  it("several boxes per ref share its label; other text ends the ref; Qwen's leading space is trimmed", () => {
    const text =
      "<ref> Woman</ref><box>(451,379),(731,806)</box> and<ref> her dog</ref><box>(219,424),(576,896)</box>\n<box>(1,1),(2,2)</box> then <box>(5,5),(6,6)</box>";
    const { boxes } = parseGrounding(text, W, H);
    expect(boxes.map((b) => b.label)).toEqual(["Woman", "her dog", "her dog", null]);
  });

  it("Qwen-VL-Chat's two-object answer", () => {
    const text = "<ref>上海环球金融中心</ref><box>(667,437),(760,874)</box>和<ref>东方明珠</ref><box>(506,75),(582,946)</box>";
    const { boxes } = parseGrounding(text, 2000, 1000);
    expect(boxes).toEqual([
      { label: "上海环球金融中心", box: [1334, 437, 1520, 874], box_normalized: [667, 437, 760, 874] },
      { label: "东方明珠", box: [1012, 75, 1164, 946], box_normalized: [506, 75, 582, 946] },
    ]);
  });

  it("a box without a ref gets the default label, else null", () => {
    expect(parseGrounding("<box>(1,2),(3,4)</box>", W, H).boxes[0].label).toBeNull();
    expect(parseGrounding("<box>(1,2),(3,4)</box>", W, H, { defaultLabel: " dog " }).boxes[0].label).toBe("dog");
    expect(parseGrounding("<ref>cat</ref><box>(1,2),(3,4)</box>", W, H, { defaultLabel: "dog" }).boxes[0].label).toBe("cat");
    expect(parseGrounding("<ref> </ref><box>(1,2),(3,4)</box>", W, H, { defaultLabel: "dog" }).boxes[0].label).toBe("dog");
  });

  it("the base grounding answer starts inside the box the prompt opened", () => {
    const r = parseGrounding("(176,106),(232,160)</box>", W, H, { startInBox: true, defaultLabel: "the ear" });
    expect(r.boxes).toEqual([{ label: "the ear", box: [176, 53, 232, 80], box_normalized: [176, 106, 232, 160] }]);
    // A node that strips special tokens never sends </box>: the complete box is emitted at end().
    const stripped = feed(["(176,106),(232", ",160)"], { startInBox: true, defaultLabel: "the ear" });
    expect(stripped.boxes).toHaveLength(1);
    expect(stripped.events.at(-1)).toMatchObject({ type: "box", label: "the ear" });
  });

  it("tolerates malformed output without throwing, by documented rules", () => {
    const cases: [string, number[][], number][] = [
      ["<box>(1,2),(3)</box>", [], 1], // missing number: dropped
      ["<box>(-5,2),(3,4)</box>", [], 1], // negative: dropped
      ["<box>(a,b),(c,d)</box>", [], 1], // garbage: dropped
      ["<box>(1,2),(3,4),(5,6)</box>", [], 1], // extra point: dropped
      [`<box>${"(".repeat(70)}</box>`, [], 1], // too long: dropped
      ["<box>(1000,2),(1200,1000)</box>", [[999, 2, 999, 999]], 0], // out of range: clamped
      ["<box>( 300 , 400 ),( 100 , 200 )</box>", [[100, 200, 300, 400]], 0], // spaces, reversed corners
      ["<box>(10.4,20.6),(30,40)</box>", [[10, 21, 30, 40]], 0], // decimals rounded
      ["<box>(1,2),(3,4)<box>(5,6),(7,8)</box>", [[5, 6, 7, 8]], 1], // interrupted box: dropped
      ["<box>(1,2),(3,4)<ref>x</ref>", [], 1], // interrupted by a ref
      ["<box>(1,2),(3,4)", [[1, 2, 3, 4]], 0], // unclosed but complete at end
      ["<box>(1,2),(3,", [], 1], // unclosed, incomplete
      ["</box></ref><ref>a</ref></quad>", [], 0], // stray closing tags
      ["<ref>x<box>(1,2),(3,4)</box>", [[1, 2, 3, 4]], 0], // unclosed ref closed by <box>
      ["<ref>It is managed</ref> <quad>(1,2),(3,4),(5,6),(7,8)</quad><box>(1,2),(3,4)</box>", [[1, 2, 3, 4]], 0], // quad skipped
      ["<<ref>>a</ref<box>(1,2),(3,4)</box", [], 1], // near-tags are content; the box never closes properly
      ["", [], 0],
    ];
    for (const [text, want, malformed] of cases) {
      const r = parseGrounding(text, W, W);
      expect(
        r.boxes.map((b) => b.box_normalized),
        text,
      ).toEqual(want);
      expect(r.malformed, text).toBe(malformed);
      expect(r.text, text).toBe(text);
    }
    expect(parseGrounding("<ref>x<box>(1,2),(3,4)</box>", W, W).boxes[0].label).toBe("x");
    expect(parseGrounding("<ref>It is managed</ref> <quad>(1,2)</quad><box>(1,2),(3,4)</box>", W, W).boxes[0].label).toBe("It is managed");
  });

  it("plain text mode removes the markup and keeps labels as words", () => {
    const text = "The<ref> dog</ref><box>(1,2),(3,4)</box> runs <quad>(1,1)</quad>fast <re";
    expect(parseGrounding(text, W, H, { text: "plain" }).text).toBe("The dog runs fast <re");
    expect(parseGrounding("a < b <bo", W, H, { text: "plain" }).text).toBe("a < b <bo");
    expect(parseGrounding("(1,2),(3,4)</box> ok", W, H, { text: "plain", startInBox: true }).text).toBe(" ok");
  });

  it("push after end is ignored; the constructor refuses a zero-size image", () => {
    const p = new GroundingParser({ width: 1, height: 1 });
    p.end();
    expect(p.push("<box>(1,2),(3,4)</box>")).toEqual([]);
    expect(() => new GroundingParser({ width: 0, height: 10 })).toThrow(RangeError);
  });
});

describe("GroundingParser: every split gives the same result", () => {
  const answers: [string, Partial<GroundingParserOptions>][] = [
    ["<ref> Woman</ref><box>(451,379),(731,806)</box> and<ref> her dog</ref><box>(219,424),(576,896)</box> playing", {}],
    ["<ref>a</ref><box>(1,2),(3,4)</box><box>(10,20),(123,45)</box> x <box>(5,6),(7,8)</box>", { defaultLabel: "d" }],
    ["(176,106),(232,160)</box>", { startInBox: true, defaultLabel: "ear" }],
    ["<ref>击掌</ref><box>(536,509),(588,602)</box>和<quad>(1,2)</quad><box>(1000,-1),(2,3)</box>< <re</ref>", {}],
    ["t <<ref>x</re<ref>y</ref><box>( 1 , 2 ),( 3 , 4 )</box><box>(9,9),(9,9)", {}],
  ];

  // Compared as JSON (thousands of splits per answer); `expect` only runs on a mismatch, to show it.
  const check = (pieces: string[], whole: ReturnType<typeof feed>, options: Partial<GroundingParserOptions>, text: string) => {
    const got = feed(pieces, options);
    const same =
      JSON.stringify(got.events) === JSON.stringify(whole.events) &&
      got.malformed === whole.malformed &&
      got.events.map((e) => (e.type === "text" ? e.text : "")).join("") === text;
    if (!same)
      expect({ pieces, events: got.events, malformed: got.malformed }).toEqual({
        pieces,
        events: whole.events,
        malformed: whole.malformed,
      });
  };

  it.each(answers)("%j: all 2-way and 3-way splits, and one character at a time", (text, options) => {
    for (const mode of ["raw", "plain"] as const) {
      const opts = { ...options, text: mode };
      const whole = feed([text], opts);
      const wholeText = whole.events.map((e) => (e.type === "text" ? e.text : "")).join("");
      if (mode === "raw") expect(wholeText).toBe(text);
      expect(whole.boxes.length).toBeGreaterThan(0);
      for (let i = 0; i <= text.length; i++) {
        check([text.slice(0, i), text.slice(i)], whole, opts, wholeText);
        for (let j = i; j <= text.length; j++) check([text.slice(0, i), text.slice(i, j), text.slice(j)], whole, opts, wholeText);
      }
      check(Array.from(text), whole, opts, wholeText);
    }
  });
});
