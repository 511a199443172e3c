// The model list from /v1/models: a table, and the choices of the file and microphone forms.

import { getJson } from "./api.js";

/** One entry per engine (an engine lists each alias as its own card whose `root` is the engine id). */
export async function loadModels() {
  const body = await getJson("/v1/models");
  return body.data.filter((m) => !m.root || m.root === m.id);
}

function languages(model) {
  const list = model.languages || [];
  if (list.includes("multilingual")) return "many (detects)";
  return list.join(", ") || "—";
}

function runsOn(model) {
  const hw = model.hardware || {};
  const parts = [];
  if (model.device) parts.push(`now on ${model.device.toUpperCase()}`);
  else if (hw.gpu === "required") parts.push("GPU only");
  else if (hw.gpu === "optional") parts.push(hw.cpu ? "GPU or CPU" : "GPU");
  else if (hw.cpu) parts.push("CPU");
  return parts.join(" ") || "—";
}

function cell(row, label, text, className = "") {
  const td = document.createElement("td");
  td.dataset.label = label;  // shown before the value when the table is stacked on a phone
  td.textContent = text;
  if (className) td.className = className;
  row.append(td);
  return td;
}

/** Fill the table; unavailable models (no live engine behind the gateway) are marked as such. */
export function renderModels(models, tbody) {
  tbody.replaceChildren();
  for (const m of models) {
    const row = document.createElement("tr");
    row.dataset.model = m.id;
    const name = document.createElement("th");
    name.scope = "row";
    name.textContent = m.id;
    if (m.name) name.title = m.name;
    row.append(name);
    cell(row, "Stage", m.stage || "—");
    cell(row, "Languages", languages(m));
    cell(row, "Runs on", runsOn(m));
    cell(row, "Aliases", (m.aliases || []).join(", ") || "—");
    const up = m.available !== false;
    const status = up ? "available" : "unavailable: no live engine";
    cell(row, "Status", status, up ? "available" : "unavailable");
    if (!up) row.classList.add("is-unavailable");
    tbody.append(row);
  }
}

/** Options for a <select>: usable models first; unavailable ones stay listed (the error says why). */
export function fillSelect(select, models, keep) {
  const previous = keep || select.value;
  select.replaceChildren();
  const sorted = [...models].sort((a, b) => (b.available !== false) - (a.available !== false));
  for (const m of sorted) {
    const option = document.createElement("option");
    option.value = m.id;
    option.textContent = m.available === false ? `${m.id} (unavailable)` : m.id;
    select.append(option);
  }
  if (sorted.some((m) => m.id === previous)) select.value = previous;
  select.disabled = sorted.length === 0;
}

/** Language suggestions: the codes the chosen models declare (free text stays allowed). */
export function fillLanguages(datalist, models) {
  const codes = new Set(["en", "de", "fr", "es", "it", "nl", "pt", "pl", "ja", "zh"]);
  for (const m of models) for (const code of m.languages || []) if (code !== "multilingual") codes.add(code);
  datalist.replaceChildren(...[...codes].sort().map((code) => Object.assign(document.createElement("option"), { value: code })));
}
