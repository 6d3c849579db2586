//! `qm top`: a live terminal view of the daemon (ratatui). A header with the node, its
//! pressure and cpu and memory (allocated and used against allocatable); the agents, sorted by
//! cpu, memory or name, filtered by name; the selected one stopped after a confirmation.
//! Refreshes every second; `q` quits and gives the terminal back as it was. The state and its
//! keys are plain data ([`Top`], [`Top::key`]) drawn by [`draw`], so tests drive them on
//! ratatui's `TestBackend`; [`run`] adds the terminal and the daemon.

use std::time::{Duration, Instant};

use qm_core::quantity::{Unit, parse};
use qm_proto::{AgentDoc, NodeDoc, PressureDoc};
use ratatui::Frame;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Gauge, Paragraph, Row, Table, TableState};

use crate::client::Failure;

/// What the agents are sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sort {
    Cpu,
    Memory,
    Name,
}

/// The view's state: what the daemon said last, and what the user chose.
#[derive(Debug)]
pub(crate) struct Top {
    pub(crate) node: Option<NodeDoc>,
    pub(crate) pressure: Option<PressureDoc>,
    pub(crate) agents: Vec<AgentDoc>,
    pub(crate) sort: Sort,
    pub(crate) filter: String,
    /// Typing into the filter.
    pub(crate) filtering: bool,
    pub(crate) selected: usize,
    /// An agent waiting for `y` to be stopped.
    pub(crate) confirm: Option<String>,
    /// The last error or outcome, shown in the footer.
    pub(crate) message: Option<String>,
}

/// What a key asks of the loop.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    None,
    Quit,
    Stop(String),
}

fn quantity(unit: Unit, v: Option<&String>) -> Option<u64> {
    v.and_then(|s| parse(unit, s).ok())
}

fn cpu_of(a: &AgentDoc) -> Option<u64> {
    quantity(
        Unit::Millicores,
        a.usage.as_ref().and_then(|u| u.get("cpu")),
    )
}

fn mem_of(a: &AgentDoc) -> Option<u64> {
    quantity(Unit::Bytes, a.usage.as_ref().and_then(|u| u.get("memory")))
}

fn cores(m: Option<u64>) -> String {
    match m {
        None => "-".to_owned(),
        Some(m) if m < 1000 => format!("{m}m"),
        Some(m) => format!("{:.2}", m as f64 / 1000.0),
    }
}

fn bytes(b: Option<u64>) -> String {
    let Some(b) = b else { return "-".to_owned() };
    let units = ["B", "Ki", "Mi", "Gi", "Ti"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else if v < 10.0 {
        format!("{v:.1}{}", units[i])
    } else {
        format!("{v:.0}{}", units[i])
    }
}

fn level_color(level: &str) -> Color {
    match level {
        "critical" => Color::Red,
        "warning" => Color::Yellow,
        _ => Color::Green,
    }
}

impl Top {
    pub(crate) fn new() -> Self {
        Top {
            node: None,
            pressure: None,
            agents: Vec::new(),
            sort: Sort::Cpu,
            filter: String::new(),
            filtering: false,
            selected: 0,
            confirm: None,
            message: None,
        }
    }

    /// The agents shown: filtered by name, sorted (the busiest first).
    pub(crate) fn rows(&self) -> Vec<&AgentDoc> {
        let f = self.filter.to_lowercase();
        let mut rows: Vec<&AgentDoc> = self
            .agents
            .iter()
            .filter(|a| f.is_empty() || a.name.to_lowercase().contains(&f))
            .collect();
        match self.sort {
            Sort::Cpu => rows.sort_by(|a, b| cpu_of(b).cmp(&cpu_of(a)).then(a.name.cmp(&b.name))),
            Sort::Memory => {
                rows.sort_by(|a, b| mem_of(b).cmp(&mem_of(a)).then(a.name.cmp(&b.name)));
            }
            Sort::Name => rows.sort_by(|a, b| a.name.cmp(&b.name)),
        }
        rows
    }

    fn selected_name(&self) -> Option<String> {
        self.rows().get(self.selected).map(|a| a.name.clone())
    }

    /// Applies a key.
    pub(crate) fn key(&mut self, k: KeyEvent) -> Action {
        if k.kind != KeyEventKind::Press {
            return Action::None;
        }
        if k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL) {
            return Action::Quit;
        }
        if let Some(name) = self.confirm.take() {
            return if k.code == KeyCode::Char('y') {
                Action::Stop(name)
            } else {
                self.message = Some(format!("kept {name}"));
                Action::None
            };
        }
        if self.filtering {
            match k.code {
                KeyCode::Enter | KeyCode::Esc => self.filtering = false,
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => {}
            }
            self.selected = 0;
            return Action::None;
        }
        let n = self.rows().len();
        match k.code {
            KeyCode::Char('q') | KeyCode::Esc => return Action::Quit,
            KeyCode::Char('c') => self.sort = Sort::Cpu,
            KeyCode::Char('m') => self.sort = Sort::Memory,
            KeyCode::Char('n') => self.sort = Sort::Name,
            KeyCode::Char('s') => {
                self.sort = match self.sort {
                    Sort::Cpu => Sort::Memory,
                    Sort::Memory => Sort::Name,
                    Sort::Name => Sort::Cpu,
                };
            }
            KeyCode::Char('/') => {
                self.filtering = true;
                self.filter.clear();
            }
            KeyCode::Down | KeyCode::Char('j') => {
                self.selected = (self.selected + 1).min(n.saturating_sub(1));
            }
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::Home => self.selected = 0,
            KeyCode::End => self.selected = n.saturating_sub(1),
            KeyCode::Char('x') | KeyCode::Delete => {
                if let Some(name) = self.selected_name() {
                    self.confirm = Some(name);
                }
            }
            _ => {}
        }
        Action::None
    }
}

/// Draws the view on `f`.
pub(crate) fn draw(f: &mut Frame, top: &Top) {
    let [head, table, foot] = Layout::vertical([
        Constraint::Length(4),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    draw_head(f, head, top);
    draw_agents(f, table, top);
    let footer = if top.filtering {
        format!("filter: {}_   (Enter to keep, Esc to end)", top.filter)
    } else if let Some(m) = &top.message {
        m.clone()
    } else {
        "c/m/n sort  / filter  ↑↓ select  x stop  q quit".to_owned()
    };
    f.render_widget(
        Paragraph::new(footer).style(Style::default().add_modifier(Modifier::DIM)),
        foot,
    );
    if let Some(name) = &top.confirm {
        let w = (name.len() as u16 + 24).min(f.area().width);
        let area = Rect {
            x: f.area().width.saturating_sub(w) / 2,
            y: f.area().height / 2,
            width: w,
            height: 3,
        };
        f.render_widget(Clear, area);
        f.render_widget(
            Paragraph::new(format!("Stop {name}? y / n"))
                .block(Block::default().borders(Borders::ALL).title("confirm")),
            area,
        );
    }
}

fn draw_head(f: &mut Frame, area: Rect, top: &Top) {
    let [line, cpu, mem] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let name = top.node.as_ref().map_or("…", |n| n.name.as_str());
    let mut spans = vec![Span::styled(
        format!("qm top · {name}"),
        Style::default().add_modifier(Modifier::BOLD),
    )];
    if let Some(p) = &top.pressure {
        spans.push(Span::raw("  pressure "));
        spans.push(Span::styled(
            p.level.to_uppercase(),
            Style::default()
                .fg(level_color(&p.level))
                .add_modifier(Modifier::BOLD),
        ));
        for (s, doc) in &p.signals {
            spans.push(Span::raw(format!("  {s} ")));
            spans.push(Span::styled(
                format!("{:.0}%", doc.utilization * 100.0),
                Style::default().fg(level_color(&doc.level)),
            ));
        }
        spans.push(Span::raw(format!("  admission {}", p.admission)));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), line);
    let gauge = |res: &str, unit: Unit, show: fn(Option<u64>) -> String| {
        let node = top.node.as_ref();
        let get = |m: Option<&std::collections::BTreeMap<String, String>>| {
            quantity(unit, m.and_then(|m| m.get(res)))
        };
        let allocatable = get(node.map(|n| &n.allocatable))
            .or_else(|| get(node.map(|n| &n.capacity)))
            .unwrap_or(0);
        let allocated = get(node.map(|n| &n.allocated)).unwrap_or(0);
        let used = get(node.and_then(|n| n.usage.as_ref()));
        let ratio = if allocatable == 0 {
            0.0
        } else {
            (allocated as f64 / allocatable as f64).clamp(0.0, 1.0)
        };
        Gauge::default()
            .ratio(ratio)
            .gauge_style(Style::default().fg(Color::Cyan))
            .label(format!(
                "{res:<6} allocated {} of {}  used {}",
                show(Some(allocated)),
                show(Some(allocatable)),
                show(used)
            ))
    };
    f.render_widget(gauge("cpu", Unit::Millicores, cores), cpu);
    f.render_widget(gauge("memory", Unit::Bytes, bytes), mem);
}

fn draw_agents(f: &mut Frame, area: Rect, top: &Top) {
    let rows = top.rows();
    let sort = match top.sort {
        Sort::Cpu => "cpu",
        Sort::Memory => "memory",
        Sort::Name => "name",
    };
    let header = Row::new(["NAME", "STATE", "CPU", "MEM", "REQ", "RST"])
        .style(Style::default().add_modifier(Modifier::BOLD));
    let body = rows.iter().map(|a| {
        let req = &a.spec.resources;
        let req = format!(
            "{}/{}",
            req.get("cpu").map_or_else(
                || "-".to_owned(),
                |v| v.to_string().trim_matches('"').to_owned()
            ),
            req.get("memory").map_or_else(
                || "-".to_owned(),
                |v| v.to_string().trim_matches('"').to_owned()
            ),
        );
        let state = Style::default().fg(match a.state.as_str() {
            "running" => Color::Green,
            "failed" | "evicted" => Color::Red,
            "pending" | "starting" | "backoff" => Color::Yellow,
            _ => Color::DarkGray,
        });
        Row::new([
            Cell::from(a.name.clone()),
            Cell::from(a.state.as_str()).style(state),
            Cell::from(cores(cpu_of(a))),
            Cell::from(bytes(mem_of(a))),
            Cell::from(req),
            Cell::from(a.restarts.to_string()),
        ])
    });
    let title = format!(
        " agents {} of {} · by {sort}{} ",
        rows.len(),
        top.agents.len(),
        if top.filter.is_empty() {
            String::new()
        } else {
            format!(" · filter {:?}", top.filter)
        }
    );
    let table = Table::new(
        body,
        [
            Constraint::Min(16),
            Constraint::Length(9),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(14),
            Constraint::Length(4),
        ],
    )
    .header(header)
    .block(Block::default().borders(Borders::TOP).title(title))
    .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default().with_selected((!rows.is_empty()).then_some(top.selected));
    f.render_stateful_widget(table, area, &mut state);
}

/// Reads the daemon into `top`.
fn refresh(c: &qm_client::Client, top: &mut Top) {
    match c.node() {
        Ok(n) => top.node = Some(n),
        Err(e) => top.message = Some(format!("cannot read the node: {e}")),
    }
    top.pressure = c.pressure().ok();
    match c.agents() {
        Ok(a) => {
            top.agents = a;
            let n = top.rows().len();
            top.selected = top.selected.min(n.saturating_sub(1));
        }
        Err(e) => top.message = Some(format!("cannot list agents: {e}")),
    }
}

/// `qm top`: until `q`.
pub(crate) fn run(c: &qm_client::Client) -> Result<(), Failure> {
    let failure = |e: std::io::Error| Failure {
        code: 1,
        message: format!("the terminal: {e}"),
    };
    // the first read says whether the daemon answers at all, before the screen is taken
    let mut top = Top::new();
    top.node = Some(c.node()?);
    refresh(c, &mut top);
    let mut terminal = ratatui::try_init().map_err(failure)?;
    let result = (|| {
        let mut last = Instant::now();
        loop {
            terminal.draw(|f| draw(f, &top)).map_err(failure)?;
            let wait = Duration::from_secs(1).saturating_sub(last.elapsed());
            if event::poll(wait).map_err(failure)? {
                if let Event::Key(k) = event::read().map_err(failure)? {
                    match top.key(k) {
                        Action::Quit => return Ok(()),
                        Action::Stop(name) => {
                            top.message = Some(match c.stop_agent(&name, None) {
                                Ok(d) => format!("{name}: {}", d.state),
                                Err(e) => format!("cannot stop {name}: {e}"),
                            });
                            refresh(c, &mut top);
                        }
                        Action::None => {}
                    }
                }
                continue;
            }
            refresh(c, &mut top);
            last = Instant::now();
        }
    })();
    ratatui::restore();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn agent(name: &str, state: qm_proto::AgentState, cpu: &str, mem: &str) -> AgentDoc {
        let mut doc = AgentDoc {
            id: name.to_owned(),
            name: name.to_owned(),
            state,
            health: "unknown".to_owned(),
            usage: Some(
                [
                    ("cpu".to_owned(), cpu.to_owned()),
                    ("memory".to_owned(), mem.to_owned()),
                ]
                .into(),
            ),
            ..AgentDoc::default()
        };
        doc.spec.name = name.to_owned();
        doc.spec.resources = [
            ("cpu".to_owned(), serde_json::json!("250m")),
            ("memory".to_owned(), serde_json::json!("256Mi")),
        ]
        .into_iter()
        .collect();
        doc
    }

    fn fixture() -> Top {
        let mut top = Top::new();
        top.node = Some(
            serde_json::from_value(serde_json::json!({
                "name": "box", "labels": {}, "capacity": { "cpu": "4", "memory": "8Gi" },
                "allocatable": { "cpu": "4", "memory": "8Gi" },
                "allocated": { "cpu": "1", "memory": "2Gi" },
                "available": { "cpu": "3", "memory": "6Gi" },
                "usage": { "cpu": "1500m", "memory": "3Gi" },
                "ready": true, "pressure": "warning", "kind": "local"
            }))
            .expect("a node"),
        );
        top.pressure = Some(
            serde_json::from_value(serde_json::json!({
                "level": "warning", "since": "2026-01-01T00:00:00Z", "admission": "open",
                "signals": {
                    "cpu": { "level": "ok", "utilization": 0.4, "available": 2.4, "psi_some_avg10": null,
                             "psi_full_avg10": null, "trend_per_s": 0.0, "exhaustion_in_s": null,
                             "confidence": 0.0, "anomaly": false, "anomaly_score": 0.0 },
                    "memory": { "level": "warning", "utilization": 0.86, "available": 1e9, "psi_some_avg10": 0.0,
                             "psi_full_avg10": 0.0, "trend_per_s": 1e6, "exhaustion_in_s": 900.0,
                             "confidence": 0.9, "anomaly": false, "anomaly_score": 0.0 }
                }
            }))
            .expect("pressure"),
        );
        use qm_proto::AgentState::{Backoff, Running};
        top.agents = vec![
            agent("coder-1", Running, "120m", "300Mi"),
            agent("coder-2", Running, "800m", "100Mi"),
            agent("researcher", Backoff, "0", "1Gi"),
        ];
        top
    }

    fn screen(top: &Top) -> String {
        let mut t = Terminal::new(TestBackend::new(80, 24)).expect("a terminal");
        t.draw(|f| draw(f, top)).expect("draw");
        let buf = t.backend().buffer().clone();
        (0..buf.area.height)
            .map(|y| {
                (0..buf.area.width)
                    .map(|x| buf[(x, y)].symbol().to_owned())
                    .collect::<String>()
                    .trim_end()
                    .to_owned()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn press(top: &mut Top, c: KeyCode) -> Action {
        top.key(KeyEvent::new(c, KeyModifiers::NONE))
    }

    fn order(top: &Top) -> Vec<&str> {
        top.rows().iter().map(|a| a.name.as_str()).collect()
    }

    #[test]
    fn the_screen_fits_80_by_24_with_pressure_usage_and_agents_busiest_first() {
        let top = fixture();
        let s = screen(&top);
        let lines: Vec<&str> = s.lines().collect();
        assert!(
            lines[0].starts_with("qm top · box  pressure WARNING"),
            "{s}"
        );
        assert!(
            lines[0].contains("memory 86%") && lines[0].contains("cpu 40%"),
            "{s}"
        );
        assert!(
            lines[1].contains("cpu    allocated 1.00 of 4.00  used 1.50"),
            "{s}"
        );
        assert!(
            lines[2].contains("memory allocated 2.0Gi of 8.0Gi  used 3.0Gi"),
            "{s}"
        );
        assert!(s.contains("agents 3 of 3 · by cpu"), "{s}");
        let rows: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with("coder") || l.starts_with("researcher"))
            .collect();
        assert!(
            rows[0].starts_with("coder-2") && rows[0].contains("800m"),
            "{s}"
        );
        assert!(
            rows[1].starts_with("coder-1") && rows[1].contains("300Mi"),
            "{s}"
        );
        assert!(
            rows[2].contains("backoff") && rows[2].contains("1.0Gi"),
            "{s}"
        );
        assert!(lines[23].contains("q quit"), "{s}");
        assert!(lines.iter().all(|l| l.chars().count() <= 80));
    }

    #[test]
    fn keys_sort_filter_select_and_stop_only_after_a_yes() {
        let mut top = fixture();
        assert_eq!(order(&top), ["coder-2", "coder-1", "researcher"]);
        press(&mut top, KeyCode::Char('m'));
        assert_eq!(order(&top), ["researcher", "coder-1", "coder-2"]);
        press(&mut top, KeyCode::Char('n'));
        assert_eq!(order(&top), ["coder-1", "coder-2", "researcher"]);
        press(&mut top, KeyCode::Char('s'));
        assert_eq!(top.sort, Sort::Cpu);
        // filter by name
        press(&mut top, KeyCode::Char('/'));
        for c in "coder".chars() {
            press(&mut top, KeyCode::Char(c));
        }
        assert!(screen(&top).contains("filter: coder_"));
        press(&mut top, KeyCode::Enter);
        assert_eq!(order(&top), ["coder-2", "coder-1"]);
        assert!(screen(&top).contains("agents 2 of 3"));
        // select the second, ask to stop it: a no keeps it, a yes stops it
        press(&mut top, KeyCode::Down);
        assert_eq!(press(&mut top, KeyCode::Char('x')), Action::None);
        assert!(screen(&top).contains("Stop coder-1? y / n"));
        assert_eq!(press(&mut top, KeyCode::Char('n')), Action::None);
        assert!(top.confirm.is_none());
        press(&mut top, KeyCode::Char('x'));
        assert_eq!(
            press(&mut top, KeyCode::Char('y')),
            Action::Stop("coder-1".to_owned())
        );
        // the selection stays within the rows
        for _ in 0..5 {
            press(&mut top, KeyCode::Down);
        }
        assert_eq!(top.selected, 1);
        assert_eq!(press(&mut top, KeyCode::Char('q')), Action::Quit);
    }
}
