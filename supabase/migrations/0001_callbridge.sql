-- callbridge: every call, its transcript turns and its timeline, written by the bridge over the
-- Data API (PostgREST) with the service-role key. Apply with `supabase db push` (or paste into
-- the SQL editor). Every write from the bridge is an upsert on the natural keys below, so a retry
-- never makes a duplicate.

create table if not exists public.calls (
    call_sid          text primary key,
    stream_sid        text,
    provider          text not null,
    direction         text not null default 'inbound' check (direction in ('inbound', 'outbound')),
    from_number       text,
    to_number         text,
    lead_id           text,
    -- in_progress while the call runs, then completed; interrupted when the bridge restarted
    -- under a live call; dialing / answered / no_answer / busy / failed / canceled for calls
    -- known only from status callbacks.
    status            text not null,
    started_at        timestamptz not null,
    ended_at          timestamptz,
    duration_ms       bigint,
    end_reason        text,
    outcome           text check (outcome in
                          ('interested', 'not_interested', 'callback', 'voicemail', 'no_answer', 'unknown')),
    summary           text,
    usage             jsonb,
    custom_parameters jsonb,
    -- From the provider's status callbacks: CallStatus (no-answer, busy, failed, completed, …),
    -- CallDuration, and AnsweredBy when answering-machine detection ran.
    provider_status     text,
    provider_duration_s integer,
    answered_by         text,
    updated_at        timestamptz not null default now()
);

create index if not exists calls_started_at_idx on public.calls (started_at desc);
create index if not exists calls_lead_id_idx on public.calls (lead_id);

-- One row per conversation item. Times are ms since the call's media stream opened; order a
-- transcript by started_at_ms (speech start), not by arrival.
create table if not exists public.call_turns (
    call_sid      text not null references public.calls (call_sid) on delete cascade,
    item_id       text not null,
    role          text not null check (role in ('caller', 'agent')),
    text          text not null,
    started_at_ms bigint not null,
    ended_at_ms   bigint not null,
    interrupted   boolean not null default false,
    primary key (call_sid, item_id)
);

create index if not exists call_turns_order_idx on public.call_turns (call_sid, started_at_ms);

-- The call's timeline: seq counts from 0 per call; at_ms is ms since the stream opened.
create table if not exists public.call_events (
    call_sid text not null references public.calls (call_sid) on delete cascade,
    seq      integer not null,
    at       timestamptz not null,
    at_ms    bigint not null,
    kind     text not null,
    data     jsonb,
    primary key (call_sid, seq)
);

-- Row level security on, with no policies: anon and authenticated users see nothing; the
-- bridge's service-role key bypasses RLS.
alter table public.calls enable row level security;
alter table public.call_turns enable row level security;
alter table public.call_events enable row level security;

revoke all on public.calls, public.call_turns, public.call_events from anon, authenticated;
grant select, insert, update, delete on public.calls, public.call_turns, public.call_events to service_role;
