// chef-genius serve: ask /v1/recipes for a streamed recipe, show it as it is written, then render it.
"use strict";

const $ = (id) => document.getElementById(id);
let markdown = "";

function say(text, error) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function headers() {
  const out = { "Content-Type": "application/json" };
  const key = $("apikey").value.trim();
  if (key) {
    out.Authorization = "Bearer " + key;
    sessionStorage.setItem("chef-genius-key", key);
  }
  return out;
}

function item(tag, text, className) {
  const node = document.createElement(tag);
  node.textContent = text; // model text is never read as HTML
  if (className) node.className = className;
  return node;
}

function renderChecks(checks) {
  const box = $("r-checks");
  box.replaceChildren();
  for (const [name, verdict] of Object.entries(checks || {})) {
    const section = item("div", "", "verdict");
    section.dataset.verdict = name;
    section.appendChild(item("h4", (verdict.passed ? "\u2713 " : "\u2717 ") + name + (verdict.passed ? ": passed" : ": not passed"),
                             verdict.passed ? "pass" : "fail"));
    const list = document.createElement("ul");
    for (const reason of verdict.reasons || []) {
      const text = (reason.passed ? "\u2713 " : "\u2717 ") + reason.check + (reason.detail ? ": " + reason.detail : "");
      list.appendChild(item("li", text, reason.passed ? "pass" : "fail"));
    }
    section.appendChild(list);
    box.appendChild(section);
  }
}

function render(result) {
  const recipe = result.recipe;
  $("r-title").textContent = recipe.title || "Untitled recipe";
  $("r-ingredients").replaceChildren(...recipe.ingredients.map((line) => item("li", line)));
  $("r-steps").replaceChildren(...recipe.steps.map((line) => item("li", line)));
  renderChecks(result.checks);
  const d = result.decoding;
  $("r-meta").textContent = `${result.model} \u00b7 decoding ${d.preset}, seed ${d.seed} \u00b7 ` +
    `${result.usage.completion_tokens} tokens \u00b7 ` + (result.finish_reason === "stop" ? "ended by itself" : "cut at the token limit");
  markdown = result.markdown;
  $("writing").hidden = true;
  $("recipe").hidden = false;
}

function errorText(body, status) {
  return (body && body.error && body.error.message) || `the server answered ${status}`;
}

async function ask(event) {
  event.preventDefault();
  const body = {
    title: $("title").value, ingredients: $("ingredients").value, notes: $("notes").value,
    decoding: $("decoding").value, max_tokens: parseInt($("max_tokens").value, 10) || 512, stream: true,
  };
  $("go").disabled = true;
  $("recipe").hidden = true;
  $("raw").textContent = "";
  $("writing").hidden = false;
  say("Writing\u2026");
  try {
    const response = await fetch("/v1/recipes", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    if (!response.ok) {
      let detail = null;
      try { detail = await response.json(); } catch (_) { /* not JSON */ }
      if (response.status === 401) $("keybox").hidden = false;
      throw new Error(errorText(detail, response.status));
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "", done = false;
    while (!done) {
      const chunk = await reader.read();
      if (chunk.done) break;
      buffer += decoder.decode(chunk.value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, end).trim();
        buffer = buffer.slice(end + 2);
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") { done = true; break; }
        const event = JSON.parse(data);
        if (event.error) throw new Error(event.error.message);
        if (event.type === "delta") $("raw").textContent += event.text;
        if (event.type === "recipe") { render(event); say(""); }
      }
    }
  } catch (error) {
    $("writing").hidden = true;
    say(String(error.message || error), true);
  } finally {
    $("go").disabled = false;
  }
}

async function copyMarkdown() {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(markdown);
    } else {
      const area = item("textarea", markdown);
      document.body.appendChild(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    say("Copied as Markdown.");
  } catch (error) {
    say("Could not copy: " + error, true);
  }
}

document.addEventListener("DOMContentLoaded", async () => {
  $("ask").addEventListener("submit", ask);
  $("copy").addEventListener("click", copyMarkdown);
  $("print").addEventListener("click", () => window.print());
  const saved = sessionStorage.getItem("chef-genius-key");
  if (saved) $("apikey").value = saved;
  try {
    const health = await (await fetch("/health")).json();
    if (health.auth) $("keybox").hidden = false;
  } catch (_) { /* the form still works */ }
});
