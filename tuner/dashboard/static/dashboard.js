// Live updates without reloading the page: a study page polls its version and, when it
// changes, fetches fresh fragments (the same templates, rendered by the server) and chart
// data; other pages refresh their fragments on a timer. Nothing here builds markup from
// data: the server escapes it, and Plotly gets numbers and pre-escaped labels.
"use strict";

const body = document.body.dataset;
const config = {displaylogo: false, responsive: true};

async function fetchText(url) {
  const response = await fetch(url, {credentials: "same-origin"});
  if (!response.ok) throw new Error(`${response.status} ${url}`);
  return response.text();
}

async function refreshFragments() {
  for (const element of document.querySelectorAll("[data-fragment]")) {
    const url = new URL(window.location.href);
    url.searchParams.set("fragment", element.dataset.fragment);
    const html = await fetchText(url);
    if (html !== element.innerHTML) element.innerHTML = html;
  }
}

async function drawCharts() {
  if (!body.chartsUrl || typeof Plotly === "undefined") return;
  const figures = JSON.parse(await fetchText(body.chartsUrl));
  for (const [id, figure] of Object.entries(figures)) {
    const element = document.getElementById(`chart-${id}`);
    if (element) Plotly.react(element, figure.data, figure.layout, config);
  }
  document.body.dataset.chartsDrawn = String(Number(body.chartsDrawn || 0) + 1);
}

function drawTrialChart() {
  const source = document.getElementById("trial-figure");
  const element = document.getElementById("chart-trial");
  if (source && element && typeof Plotly !== "undefined") {
    const figure = JSON.parse(source.textContent);
    Plotly.react(element, figure.data, figure.layout, config);
  }
}

function setLive(ok) {
  const dot = document.getElementById("live");
  if (dot) dot.className = ok ? "live" : "live stale";
}

async function poll() {
  let delay = Number(body.poll || 2000);
  try {
    if (body.versionUrl) {
      const {version} = JSON.parse(await fetchText(body.versionUrl));
      if (version !== body.version) {
        if (body.version !== undefined) await refreshFragments();
        body.version = version;
        await drawCharts();
      }
    } else {
      await refreshFragments();
    }
    setLive(true);
  } catch (error) {
    setLive(false);
    delay = 5000;
  }
  setTimeout(poll, delay);
}

drawTrialChart();
poll();
