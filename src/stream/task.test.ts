import { describe, expect, it } from "vitest";
import { groundingPrompt } from "../prompt/tasks";
import type { NodeEvent } from "../protocol/events";
import { collectTask, relayTask, type TaskOptions } from "./task";
import { controlledSource, done, nodeError, parseSse, readChunks, sleep, tok } from "./test-support";

async function run(events: NodeEvent[], options: TaskOptions) {
  const src = controlledSource(events);
  src.close();
  const text = (await readChunks(relayTask(src.stream, options, { keepAliveMs: 0 }))).join("");
  return parseSse(text).messages.map((m) => ({ event: m.event, data: JSON.parse(m.data) }));
}

const usage = { prompt_tokens: 300, completion_tokens: 2, total_tokens: 302 };

describe("relayTask", () => {
  it("caption: deltas then done with the trimmed caption, usage and engine", async () => {
    expect(await run([tok(0, " A dog"), tok(0, " runs. "), done(0)], { task: "caption", meta: { model: "qwen-vl" } })).toEqual([
      { event: "delta", data: { text: " A dog runs. " } },
      { event: "done", data: { model: "qwen-vl", caption: "A dog runs.", finish_reason: "stop", usage, engine: "simulated" } },
    ]);
  });

  it("vqa: answer", async () => {
    const events = await run([tok(0, "Red"), done(0, 300, 2, "length")], { task: "vqa" });
    expect(events.at(-1)).toEqual({ event: "done", data: { answer: "Red", finish_reason: "length", usage, engine: "simulated" } });
  });

  it("grounding (chat answer): a box event as each </box> closes, boxes in pixels in done", async () => {
    const src = controlledSource();
    const reader = relayTask(src.stream, { task: "grounding", image: { width: 640, height: 480 } }, { keepAliveMs: 0 }).getReader();
    const decoder = new TextDecoder();
    const next = async () => parseSse(decoder.decode((await reader.read()).value)).messages.map((m) => [m.event, JSON.parse(m.data)]);
    src.push(tok(0, "<ref>dog</ref><box>(100,2"));
    expect(await next()).toEqual([["delta", { text: "<ref>dog</ref><box>(100,2" }]]);
    src.push(tok(0, "00),(500,"), tok(0, "600)</bo"), tok(0, "x> and <ref>cat</ref><box>(0,0),(999,999)</box>"));
    const dog = { label: "dog", box: [64, 96, 320, 288], box_normalized: [100, 200, 500, 600] };
    const cat = { label: "cat", box: [0, 0, 639, 480], box_normalized: [0, 0, 999, 999] };
    expect(await next()).toEqual([
      ["delta", { text: "00),(500,600)</box>" }],
      ["box", dog],
      ["delta", { text: " and <ref>cat</ref><box>(0,0),(999,999)</box>" }],
      ["box", cat],
    ]);
    src.push(done(0));
    const last = await next();
    expect(last).toEqual([
      [
        "done",
        {
          boxes: [dog, cat],
          text: "<ref>dog</ref><box>(100,200),(500,600)</box> and <ref>cat</ref><box>(0,0),(999,999)</box>",
          finish_reason: "stop",
          usage,
          engine: "simulated",
        },
      ],
    ]);
    expect((await reader.read()).done).toBe(true);
  });

  it("grounding (base answer): the prompt opened the box, the label is the expression", async () => {
    const { grounding } = groundingPrompt("qwen-vl", { expression: "the ear" });
    const events = await run([tok(0, "(176,106),(232,"), tok(0, "160)</box>"), done(0)], {
      task: "grounding",
      image: { width: 1000, height: 500 },
      grounding,
    });
    const box = { label: "the ear", box: [176, 53, 232, 80], box_normalized: [176, 106, 232, 160] };
    expect(events).toEqual([
      { event: "delta", data: { text: "(176,106),(232,160)</box>" } },
      { event: "box", data: box },
      { event: "done", data: { boxes: [box], text: "(176,106),(232,160)</box>", finish_reason: "stop", usage, engine: "simulated" } },
    ]);
  });

  it("grounding: a box left open at the end is emitted before done", async () => {
    const events = await run([tok(0, "(1,2),(3,4)"), done(0)], {
      task: "grounding",
      image: { width: 1000, height: 1000 },
      grounding: { defaultLabel: "x", startInBox: true },
    });
    expect(events.map((e) => e.event)).toEqual(["delta", "box", "done"]);
  });

  it("errors: an error event, a source that ends early; keep-alives while waiting", async () => {
    const err = await run([tok(0, "A"), nodeError("deadline_exceeded")], { task: "caption" });
    expect(err).toEqual([
      { event: "delta", data: { text: "A" } },
      {
        event: "error",
        data: {
          error: {
            message: "The model server ran out of time for this request.",
            type: "server_error",
            param: null,
            code: "internal_error",
          },
        },
      },
    ]);
    const early = await run([tok(0, "A")], { task: "vqa" });
    expect(early.at(-1)).toMatchObject({ event: "error", data: { error: { code: "internal_error" } } });

    const src = controlledSource();
    const reading = readChunks(relayTask(src.stream, { task: "caption" }, { keepAliveMs: 10 }));
    await sleep(35);
    src.push(tok(0, "x"), done(0));
    const sse = parseSse((await reading).join(""));
    expect(sse.comments.length).toBeGreaterThanOrEqual(1);
    expect(sse.messages.map((m) => m.event)).toEqual(["delta", "done"]);
  });

  it("ignores other prompts; a grounding task needs the image size", async () => {
    expect(await run([tok(1, "nope"), tok(0, "yes"), done(1), done(0)], { task: "caption" })).toEqual([
      { event: "delta", data: { text: "yes" } },
      { event: "done", data: { caption: "yes", finish_reason: "stop", usage, engine: "simulated" } },
    ]);
    expect(() => relayTask(controlledSource().stream, { task: "grounding" })).toThrow(RangeError);
  });
});

describe("collectTask", () => {
  it("returns the same body as the done event", async () => {
    const r = await collectTask(controlledSource([tok(0, "<ref>a</ref><box>(0,0),(500,500)</box>"), done(0)]).stream, {
      task: "grounding",
      image: { width: 200, height: 100 },
    });
    expect(r).toEqual({
      ok: true,
      result: {
        boxes: [{ label: "a", box: [0, 0, 100, 50], box_normalized: [0, 0, 500, 500] }],
        text: "<ref>a</ref><box>(0,0),(500,500)</box>",
        finish_reason: "stop",
        usage,
        engine: "simulated",
      },
    });
  });

  it("returns failures as values and aborts the node on an error event", async () => {
    const abort = new AbortController();
    const r = await collectTask(controlledSource([nodeError("overloaded")]).stream, { task: "caption" }, abort);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.code).toBe("no_capacity");
    expect(abort.signal.aborted).toBe(true);
    const early = controlledSource([tok(0, "x")]);
    early.close();
    const e = await collectTask(early.stream, { task: "caption" });
    expect(!e.ok && e.error.code).toBe("internal_error");
  });
});
